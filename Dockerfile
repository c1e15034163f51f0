# Multi-stage build: compile in the Rust image, run as non-root on slim Debian.
FROM rust:1-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends cmake pkg-config libssl-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in a layer of their own that is rebuilt only when
# Cargo.toml or Cargo.lock change: stub sources with the crate's layout (the
# library, the switchyard binary and the two test-support binaries Cargo.toml
# names, which must exist even though they are not built) are compiled against
# the real manifest, then thrown away.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > src/bin/mock_upstream.rs \
 && echo 'fn main() {}' > src/bin/stream_load.rs \
 && cargo build --release --locked --bin switchyard \
 && rm -rf src
COPY src ./src
# touch: the real sources must look newer than the stubs' build, whatever
# times COPY gave them, or cargo would keep the stub binary
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin switchyard \
 && strip target/release/switchyard

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/switchyard --create-home switchyard \
 && install -d -o switchyard -m 0700 /var/lib/switchyard/state
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY conf /etc/switchyard
USER switchyard
WORKDIR /var/lib/switchyard
EXPOSE 4000 4001
# No RUST_LOG here: the config's log.level rules (RUST_LOG, when set, overrides it).
# SIGTERM drains in-flight requests (see server.grace_period)
STOPSIGNAL SIGTERM
# /health on the API listener (docker.yaml: port 4000) answers without a key.
# No curl in this image: bash's /dev/tcp. Change the port if the config does.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/4000 && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && grep -q '\"status\":\"ok\"' <&3"]
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve", "-c", "/etc/switchyard/docker.yaml"]
