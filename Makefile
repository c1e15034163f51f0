# The two commands a newcomer needs:
#   make run    build and run the gateway on conf/switchyard.yaml (offline demo upstream)
#   make test   run every test (unit, integration through the real binary, openai SDK)
CONFIG ?= conf/switchyard.yaml

.PHONY: run test lint check bench install

run:
	./scripts/deps.sh build
	cargo run --release --bin switchyard -- serve -c $(CONFIG)

# Installs the release binary (PREFIX=/usr/local by default) so `switchyard
# status`, `probe` and friends work from any directory.
PREFIX ?= /usr/local
install:
	./scripts/deps.sh build
	cargo build --release --locked --bin switchyard
	install -D -m 0755 target/release/switchyard $(DESTDIR)$(PREFIX)/bin/switchyard

test:
	./scripts/deps.sh test
	cargo test --all-targets
	SWITCHYARD_BIN=$${CARGO_TARGET_DIR:-target}/debug/switchyard ./scripts/deploy-check.sh
	SWITCHYARD_BIN=$${CARGO_TARGET_DIR:-target}/debug/switchyard ./scripts/k8s-check.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	python3 scripts/import-cycles.py
	@big=$$(find src tests -name '*.rs' -exec wc -l {} + | awk '$$2 != "total" && $$1 > 700 {print}'); \
	  if [ -n "$$big" ]; then echo "source files over 700 lines:"; echo "$$big"; exit 1; fi

check:
	cargo build --bin switchyard
	for f in conf/*.yaml; do \
	  OPENAI_API_KEY=sk-check-aaaaaaaaaaaaaaaa GITHUB_TOKEN=ghp_check_aaaaaaaaaaaaaaaa GEMINI_API_KEY=gemini-check-aaaaaaaaaaaa REDIS_PASSWORD=check-redis-password \
	  AZURE_OPENAI_KEY=azure-check-aaaaaaaaaaaa AZURE_OPENAI_RESOURCE=check-resource ANTHROPIC_API_KEY=sk-ant-check-aaaaaaaaaaaa \
	  SWITCHYARD_CLIENT_KEY=check-client-key SWITCHYARD_ADMIN_TOKEN=check-admin-token \
	  $${CARGO_TARGET_DIR:-target}/debug/switchyard check -c $$f > /dev/null || exit 1; echo "$$f: OK"; done

bench:
	./scripts/deps.sh bench
	./bench/run.sh
