#!/usr/bin/env bash
# Soak: JSON chat load through Switchyard for DURATION (default 5m) with
# metrics and usage recording on and the usage store on disk, against the mock
# upstream on loopback. Prints RSS every INTERVAL and at start/end, requests
# served, and the usage store's rows and size: memory should stay flat and the
# store bounded by state.max_rows (MAX_ROWS). Bounded in time; stops by itself.
#
#   ./bench/soak.sh                          # 5 minutes, 16 connections
#   DURATION=60 MAX_ROWS=100000 ./bench/soak.sh
#   NO_BUILD=1 BIN_DIR=/tmp/bins ./bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-300}"     # seconds
INTERVAL="${INTERVAL:-30}"      # seconds between RSS samples
CONNS="${CONNS:-16}"
MAX_ROWS="${MAX_ROWS:-1000000}"
BASE_PORT="${BASE_PORT:-19200}"
MOCK=$BASE_PORT; SY=$((BASE_PORT+1)); SY_ADMIN=$((BASE_PORT+2))
OUT=$(mktemp -d /tmp/switchyard-soak.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "needs wrk: ./scripts/deps.sh bench" >&2; exit 1; }
BIN_DIR="${BIN_DIR:-./target/release}"
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --quiet --features test-support --bin switchyard --bin mock-upstream
  BIN_DIR=./target/release
fi
"$BIN_DIR/mock-upstream" "127.0.0.1:$MOCK" 1 16 > "$OUT/mock.log" 2>&1 & pids+=($!)
cat > "$OUT/switchyard.yaml" <<YAML
listen: 127.0.0.1:$SY
admin: {listen: '127.0.0.1:$SY_ADMIN'}
server: {threads: 1}
state: {path: '$OUT/state', max_rows: $MAX_ROWS}
upstreams:
  - {name: mock, base_url: 'http://127.0.0.1:$MOCK/v1', keys: [sk-soak-key-aaaaaaaaaaaaaaaa], models: ['gpt-*']}
YAML
RUST_LOG=warn "$BIN_DIR/switchyard" serve -c "$OUT/switchyard.yaml" > "$OUT/switchyard.log" 2>&1 & SYPID=$!; pids+=($SYPID)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$SY/health" && break; sleep 0.1; done
cat > "$OUT/json.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
LUA
rss() { awk '/VmRSS/ {print $2}' "/proc/$SYPID/status"; }
# warm up (pools, allocator), then the start reading
wrk -t1 -c"$CONNS" -d5s -s "$OUT/json.lua" "http://127.0.0.1:$SY/v1/chat/completions" > /dev/null 2>&1 || true
RSS_START=$(rss)
echo "soak: ${DURATION}s, $CONNS connections, state.max_rows $MAX_ROWS; RSS after warm-up $((RSS_START / 1024)) MiB" >&2
wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$OUT/json.lua" "http://127.0.0.1:$SY/v1/chat/completions" > "$OUT/wrk.txt" 2>&1 &
WRK=$!
t=0
while kill -0 "$WRK" 2>/dev/null; do
  sleep "$INTERVAL"; t=$((t + INTERVAL))
  kill -0 "$WRK" 2>/dev/null && echo "  t=${t}s RSS $(( $(rss) / 1024 )) MiB" >&2
done
wait "$WRK" || true
RSS_END=$(rss)
sleep 1   # the usage writer's last batch
python3 - "$OUT" "$RSS_START" "$RSS_END" "$MAX_ROWS" "$SY_ADMIN" <<'PY'
import re, sys, os, sqlite3, urllib.request
out, start, end, max_rows, admin = sys.argv[1:]
t = open(os.path.join(out, "wrk.txt")).read()
n = int(re.search(r"(\d+) requests in", t).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
db = os.path.join(out, "state", "usage.db")
rows = sqlite3.connect(db).execute("SELECT COALESCE(SUM(count), 0) FROM batches").fetchone()[0]
size = sum(os.path.getsize(db + s) for s in ("", "-wal", "-shm") if os.path.exists(db + s))
metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
dropped = re.search(r"^switchyard_usage_dropped_total (\d+)", metrics, re.M)
print(f"\nSwitchyard soak: {n} requests in the run ({rps:.0f} req/s), non-2xx {int(errs.group(1)) if errs else 0}")
print(f"RSS start {int(start)/1024:.1f} MiB, end {int(end)/1024:.1f} MiB ({(int(end)-int(start))/1024:+.1f} MiB)")
print(f"usage store: {rows} rows (state.max_rows {max_rows}), {size/1048576:.1f} MiB on disk; records dropped {dropped.group(1) if dropped else '?'}")
PY
