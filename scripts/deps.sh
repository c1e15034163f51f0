#!/usr/bin/env bash
# Installs what building and testing Switchyard needs and a fresh Debian/Ubuntu
# machine may lack: cmake (Pingora's zlib-ng), a C toolchain, pkg-config and
# OpenSSL headers; with `test`, also the `openai` and `anthropic` Python SDKs
# (and `h2`, an HTTP/2 transport) and Node with tests/node's SDKs
# (`@anthropic-ai/sdk`) for the SDK tests, curl for the HTTP/2 tests and
# Debian's Chromium + ChromeDriver for the dashboard's browser test and
# systemd (for `systemd-analyze verify` of the shipped unit) and
# redis-server (the fleet tests start their own);
# with `bench`, also nginx-light, wrk and h2load. Installs only what is missing.
set -euo pipefail
what="${1:-build}"
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ "$what" = test ]; then
  command -v openssl >/dev/null || need+=(openssl)   # the HTTPS tests make a certificate
  command -v curl >/dev/null || need+=(curl)         # the HTTP/2 tests' client
  [ -x /usr/bin/chromium ] || need+=(chromium)        # the dashboard's browser test
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
  command -v systemd-analyze >/dev/null || need+=(systemd)   # deploy-check verifies the unit
  [ -x /usr/bin/redis-server ] || need+=(redis-server)        # the fleet tests' shared store
  command -v node >/dev/null || need+=(nodejs)                # the Node client SDKs' tests
  command -v npm >/dev/null || need+=(npm)
fi
if [ "$what" = bench ]; then
  command -v nginx >/dev/null || need+=(nginx-light)
  command -v wrk >/dev/null || need+=(wrk)
  command -v h2load >/dev/null || need+=(nghttp2-client)   # the h2 case
  [ -x /usr/bin/redis-server ] || need+=(redis-server)      # FLEET=1
fi
if [ "$what" = test ] || [ "$what" = bench ]; then
  command -v python3 >/dev/null || need+=(python3 python3-pip)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "deps: Rust is not installed; get it from https://rustup.rs" >&2
  exit 1
fi
if [ "$what" = test ] && ! python3 -c "import openai, h2, anthropic" 2>/dev/null; then
  echo "deps: installing the openai and anthropic Python SDKs and h2 (an HTTP/2 transport)"
  python3 -m pip install -q openai h2 anthropic 2>/dev/null \
    || python3 -m pip install -q --break-system-packages openai h2 anthropic
fi
if [ "$what" = test ] && ! command -v kubernetes-validate >/dev/null; then
  echo "deps: installing kubernetes-validate (scripts/k8s-check.sh)"
  python3 -m pip install -q kubernetes-validate 2>/dev/null || python3 -m pip install -q --break-system-packages kubernetes-validate
fi
node_dir="$(dirname "$0")/../tests/node"
if [ "$what" = test ] && [ ! -d "$node_dir/node_modules/@anthropic-ai/sdk" ]; then
  echo "deps: installing the Node client SDKs (tests/node)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --silent)
fi
