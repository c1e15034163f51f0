#!/usr/bin/env bash
# Checks the Kubernetes manifests (deploy/kubernetes/): each passes
# `kubernetes-validate --strict` (PyPI; scripts/deps.sh test installs it),
# and the ConfigMap's config passes `switchyard check` with the Secret's
# values as its environment (Redis is not reachable here: a warning only).
#   SWITCHYARD_BIN=target/debug/switchyard scripts/k8s-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SWITCHYARD_BIN:-target/debug/switchyard}
dir=deploy/kubernetes
command -v kubernetes-validate >/dev/null || { echo "k8s-check: kubernetes-validate is needed (pip install kubernetes-validate)" >&2; exit 1; }
kubernetes-validate --strict --quiet "$dir"/{secret,configmap,redis,deployment,service}.yaml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$dir" "$tmp" <<'PY'
import sys, yaml, shlex
d, out = sys.argv[1], sys.argv[2]
cm = yaml.safe_load(open(f"{d}/configmap.yaml"))
open(f"{out}/switchyard.yaml", "w").write(cm["data"]["switchyard.yaml"])
secret = yaml.safe_load(open(f"{d}/secret.yaml"))
with open(f"{out}/env", "w") as f:
    for k, v in secret["stringData"].items():
        f.write(f"export {k}={shlex.quote(v)}\n")
PY
# shellcheck disable=SC1091
( . "$tmp/env"; "$BIN" check --no-env-file -c "$tmp/switchyard.yaml" > "$tmp/check.txt" ) || { cat "$tmp/check.txt"; echo "k8s-check: the ConfigMap's config fails switchyard check" >&2; exit 1; }
grep -q "shared: key cooldowns" "$tmp/check.txt" || { echo "k8s-check: the config does not share key state" >&2; exit 1; }
echo "k8s-check: manifests valid; the ConfigMap's config passes switchyard check"
