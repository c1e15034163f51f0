#!/usr/bin/env bash
# Where the gateway's CPU goes on one case of bench/run.sh: the mock upstream
# and Switchyard (one worker, pinned to SERVER_CPU) with wrk on LOAD_CPU,
# `perf record -g` on the gateway for DURATION, then the hottest symbols
# (self time) grouped by crate. Loopback only; bounded by DURATION.
#
#   ./bench/profile.sh                    # JSON, 100 client keys, 10s
#   CASE=stream ./bench/profile.sh        # a 64-event stream instead
#   PAD=131072 ./bench/profile.sh         # a 128 KB body
#   NO_BUILD=1 BIN_DIR=/tmp/bins ./bench/profile.sh
#   VARY=1 ./bench/profile.sh             # a body unique per call
#   CALLGRAPH=dwarf ./bench/profile.sh    # inclusive costs through inlined frames
#   MESSAGES=1 ./bench/profile.sh         # the same call through Anthropic's Messages API
#   CONF="cache: {models: ['gpt-*']}" VARY=1 ./bench/profile.sh   # YAML added to the config
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"; CONNS="${CONNS:-16}"; CLIENTS="${CLIENTS:-100}"
CASE="${CASE:-json}"; PAD="${PAD:-0}"; TOP="${TOP:-40}"
SERVER_CPU="${SERVER_CPU:-0}"; LOAD_CPU="${LOAD_CPU:-1}"
BASE_PORT="${BASE_PORT:-19300}"; MOCK=$BASE_PORT; SY=$((BASE_PORT+1)); SY_ADMIN=$((BASE_PORT+2))
command -v perf >/dev/null && command -v wrk >/dev/null || { echo "needs perf and wrk" >&2; exit 1; }
BIN_DIR="${BIN_DIR:-./target/release}"
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --quiet --features test-support --bin switchyard --bin mock-upstream
fi
OUT=$(mktemp -d /tmp/switchyard-profile.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

taskset -c "$LOAD_CPU" "$BIN_DIR/mock-upstream" "127.0.0.1:$MOCK" 1 64 > "$OUT/mock.log" 2>&1 & pids+=($!)
{
  echo "listen: 127.0.0.1:$SY"
  echo "admin: {listen: '127.0.0.1:$SY_ADMIN'}"
  echo "server: {threads: 1}"
  echo "clients:"
  for i in $(seq 1 "$CLIENTS"); do echo "  - {name: c$i, key: bench-client-key-$(printf '%06d' "$i")-xxxxxxxx}"; done
  echo "upstreams: [{name: mock, base_url: 'http://127.0.0.1:$MOCK/v1', keys: [sk-bench-key-000001-aaaaaaaaaaaa], models: ['gpt-*']}]"
  if [ -n "${CONF:-}" ]; then echo "$CONF"; fi
} > "$OUT/switchyard.yaml"
RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN_DIR/switchyard" serve -c "$OUT/switchyard.yaml" > "$OUT/switchyard.log" 2>&1 & SYPID=$!; pids+=($SYPID)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$SY/health" && break; sleep 0.1; done

STREAM=$([ "$CASE" = stream ] && echo 1 || echo 0)
python3 -c 'import json,sys
stream, pad = sys.argv[1] == "1", int(sys.argv[2])
user = "Say hello in one short sentence."
if pad: user += " " + ("lorem ipsum dolor sit amet " * (pad // 27 + 1))[:pad]
b = {"model": "gpt-4o-mini", "max_tokens": 256, "messages": [
  {"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
  {"role": "user", "content": user}]}
if stream: b["stream"] = True
print(json.dumps(b, separators=(",", ":")))' "$STREAM" "$PAD" > "$OUT/body.json"
KEY="bench-client-key-$(printf '%06d' $(( (CLIENTS + 1) / 2 )))-xxxxxxxx"
cat > "$OUT/req.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
local f = io.open("$OUT/body.json"); wrk.body = f:read("*l"); f:close()
LUA
if [ -n "${VARY:-}" ]; then
  cat >> "$OUT/req.lua" <<'LUA'
local run = tostring(os.time()) .. "-" .. tostring(math.random(1e9))
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, (wrk.body:gsub("Say hello", "Say hello " .. run .. "-" .. n, 1)))
end
LUA
fi
URL="http://127.0.0.1:$SY/v1/chat/completions"
if [ -n "${MESSAGES:-}" ]; then
  # the same call as an Anthropic client makes it
  python3 -c 'import json,sys
b = json.load(open(sys.argv[1]))
sysmsg = b["messages"][0]["content"]
m = {"model": b["model"], "max_tokens": b["max_tokens"], "system": sysmsg, "messages": b["messages"][1:]}
if b.get("stream"): m["stream"] = True
print(json.dumps(m, separators=(",", ":")))' "$OUT/body.json" > "$OUT/msgs.json" && mv "$OUT/msgs.json" "$OUT/body.json"
  URL="http://127.0.0.1:$SY/v1/messages"
fi
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -s "$OUT/req.lua" "$URL" > /dev/null
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$((DURATION + 2))s" -s "$OUT/req.lua" "$URL" > "$OUT/wrk.txt" &
WRK=$!
sleep 1
perf record -q --call-graph "${CALLGRAPH:-fp}" -F 999 -p "$SYPID" -o "$OUT/perf.data" -- sleep "$DURATION" 2> /dev/null
wait "$WRK"
grep -E "Requests/sec" "$OUT/wrk.txt"
set +o pipefail   # `head` ends the reports early
echo "--- hottest symbols, self time (% of the gateway's samples)"
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2> /dev/null \
  | grep -E '^ +[0-9.]+%' | head -n "$TOP"
echo "--- self time by object (the binary, the kernel, libc)"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2> /dev/null | grep -E '^ +[0-9.]+%' | head -6
echo "--- the binary's self time by crate"
perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio 2> /dev/null \
  | grep -E '^ +[0-9.]+% +switchyard ' \
  | sed -E 's/^ +([0-9.]+)% +switchyard +\[.\] +(<?)([a-z_0-9]+).*/\1 \3/' \
  | awk '{ total[$2] += $1 } END { for (c in total) printf "%6.2f%%  %s\n", total[c], c }' | sort -rn | head -12
echo "perf data: $OUT/perf.data (perf report -i $OUT/perf.data)"
