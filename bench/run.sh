#!/usr/bin/env bash
# Benchmark: small non-streaming and streaming chat requests against
#   1. the mock upstream directly,
#   2. nginx proxy_pass in front of it (keepalive upstream, buffering off),
#   3. Switchyard in front of it,
# in one run, on loopback only. Prints requests/s, p50, p99 and ratios, and
# Switchyard's RSS idle and under load. Bounded: each case runs DURATION.
#
#   ./bench/run.sh                 # defaults below
#   DURATION=5s ROUNDS=3 CONNS=16 KEYS=50 ./bench/run.sh
#   BASELINE=/path/to/old/switchyard ./bench/run.sh   # also measure another build, same run
#   NO_BUILD=1 BIN_DIR=/tmp/bins ./bench/run.sh        # binaries built beforehand
#   CLIENTS=100 ./bench/run.sh                          # with client authentication on
#   CLIENTS=100 LIMITED=1 ./bench/run.sh                # also the same build with every limit on (never reached)
#   QUIET=1 ./bench/run.sh                              # also the same build with metrics.enabled and state.usage off
#   CLIENTS=100 FLEET=1 ./bench/run.sh                  # also LIMITED with its limits shared through a redis-server (local, strict)
#   CACHE=1 ./bench/run.sh                              # also the same build with a response cache: every call a hit, every call a miss
#   CLIENTS=100 TENANTS=1 ./bench/run.sh                # also the same clients made at run time (admin API), each with a quota
#   SIZES=0 TLS=0 H2=0 ./bench/run.sh                   # without the 16/128 KB bodies, the TLS case, the h2load case
#
# Like the outside onthebench method: the server under test runs on one core
# (SERVER_CPU), wrk and the mock upstream on the other (LOAD_CPU), and each
# request carries a body like a real client's (a system and a user message,
# max_tokens). Cases: json, stream, json over TLS (both serve the same
# self-signed certificate), json with 16 KB and 128 KB bodies, and JSON over
# h2 with TLS through h2load.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-16}"
CHUNKS="${CHUNKS:-64}"
KEYS="${KEYS:-1}"
CLIENTS="${CLIENTS:-0}"   # client keys configured (requests authenticate as the middle one)
BASE_PORT="${BASE_PORT:-19100}"
MOCK=$BASE_PORT; NGINX=$((BASE_PORT+1)); SY=$((BASE_PORT+2)); SY_ADMIN=$((BASE_PORT+3))
BL=$((BASE_PORT+4)); BL_ADMIN=$((BASE_PORT+5))
BASELINE="${BASELINE:-}"   # another switchyard binary (e.g. the previous commit's) run side by side
LIMITED="${LIMITED:-}"     # 1: also run this build with every limit (gateway, client, upstream rpm/tpm/max_concurrent, queue) set high
LM=$((BASE_PORT+6)); LM_ADMIN=$((BASE_PORT+7))
QUIET="${QUIET:-}"         # 1: also run this build with per-request metrics and usage recording off
FLEET="${FLEET:-}"         # 1: also LIMITED with state.redis, limits mode local and strict (implies LIMITED)
[ -n "$FLEET" ] && LIMITED=1
CACHE="${CACHE:-}"         # 1: also a build with `cache:` on (hits, and misses with a body unique per call)
CA=$((BASE_PORT+18)); CA_ADMIN=$((BASE_PORT+19))
TENANTS="${TENANTS:-}"     # 1 (with CLIENTS): also this build with its clients made over the admin API, each with a quota
TN=$((BASE_PORT+20)); TN_ADMIN=$((BASE_PORT+21)); YC=$((BASE_PORT+22)); YC_ADMIN=$((BASE_PORT+23))
FL=$((BASE_PORT+13)); FL_ADMIN=$((BASE_PORT+14)); FS=$((BASE_PORT+15)); FS_ADMIN=$((BASE_PORT+16)); REDIS_PORT=$((BASE_PORT+17))
QT=$((BASE_PORT+8)); QT_ADMIN=$((BASE_PORT+9))
WORKERS="${WORKERS:-1}"   # nginx worker_processes and switchyard server.threads
SIZES="${SIZES:-1}"; TLS="${TLS:-1}"; H2="${H2:-1}"
SERVER_CPU="${SERVER_CPU:-0}"; LOAD_CPU="${LOAD_CPU:-1}"
NGINX_TLS=$((BASE_PORT+10)); SY_TLS=$((BASE_PORT+11)); BL_TLS=$((BASE_PORT+12))
# pinning needs two cores and taskset; without them everything shares the cores
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  ON_SERVER=(taskset -c "$SERVER_CPU"); ON_LOAD=(taskset -c "$LOAD_CPU")
else
  ON_SERVER=(); ON_LOAD=()
fi
[ "$H2" = 1 ] && ! command -v h2load >/dev/null && { echo "no h2load (nghttp2-client): skipping the h2 case" >&2; H2=0; }
OUT=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT

command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx: ./scripts/deps.sh bench" >&2; exit 1; }
BIN_DIR="${BIN_DIR:-./target/release}"   # with NO_BUILD=1: binaries built beforehand
if [ -z "${NO_BUILD:-}" ]; then
  echo "building release binaries..." >&2
  # the mock upstream is test support: it needs the feature (the gateway's hot path does not change with it)
  cargo build --release --quiet --features test-support --bin switchyard --bin mock-upstream
  BIN_DIR=./target/release
fi

"${ON_LOAD[@]}" "$BIN_DIR/mock-upstream" "127.0.0.1:$MOCK" 1 "$CHUNKS" > "$OUT/mock.log" 2>&1 & MOCKPID=$!; pids+=($MOCKPID)
# one self-signed certificate for every TLS listener
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" > /dev/null 2>&1

cat > "$OUT/nginx.conf" <<NGX
worker_processes $WORKERS;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;   # nginx closes a connection after 1,000 calls by default (h2load does not reconnect)
  client_body_temp_path $OUT; proxy_temp_path $OUT; fastcgi_temp_path $OUT; uwsgi_temp_path $OUT; scgi_temp_path $OUT;
  upstream mock { server 127.0.0.1:$MOCK; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX;
    listen 127.0.0.1:$NGINX_TLS ssl http2;
    ssl_certificate $OUT/cert.pem;
    ssl_certificate_key $OUT/key.pem;
    client_max_body_size 32m;
    client_body_buffer_size 1m;   # bodies stay in memory (no temp files), as the gateway's do
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-bench-key";
      proxy_buffering off;
    }
  }
}
NGX
"${ON_SERVER[@]}" nginx -c "$OUT/nginx.conf"

{
  echo "listen: ['127.0.0.1:$SY', {addr: '127.0.0.1:$SY_TLS', tls: {cert: '$OUT/cert.pem', key: '$OUT/key.pem'}}]"
  echo "admin: {listen: '127.0.0.1:$SY_ADMIN'}"
  echo "server: {threads: $WORKERS}"
  if [ "$CLIENTS" -gt 0 ]; then
    echo "clients:"
    for i in $(seq 1 "$CLIENTS"); do echo "  - {name: c$i, key: bench-client-key-$(printf '%06d' "$i")-xxxxxxxx}"; done
  fi
  echo "upstreams:"
  echo "  - name: mock"
  echo "    base_url: http://127.0.0.1:$MOCK/v1"
  echo "    keys:"
  for i in $(seq 1 "$KEYS"); do echo "      - sk-bench-key-$(printf '%06d' "$i")-aaaaaaaaaaaa"; done
  echo "    models: ['gpt-*']"
  echo "  - {name: agg, base_url: 'http://127.0.0.1:$MOCK/v1', keys: [sk-bench-agg-aaaaaaaaaaaaaaaa], models: ['agg-*'], stream_only: true}"
  echo "  - {name: syn, base_url: 'http://127.0.0.1:$MOCK/v1', keys: [sk-bench-syn-aaaaaaaaaaaaaaaa], models: ['syn-*'], no_stream: true}"
  # two upstreams serving one model, balanced by weight (the balancing cost)
  echo "  - {name: bal1, base_url: 'http://127.0.0.1:$MOCK/v1', keys: [sk-bench-bal1-aaaaaaaaaaaaaaa], models: ['bal-*'], weight: 2}"
  echo "  - {name: bal2, base_url: 'http://127.0.0.1:$MOCK/v1', keys: [sk-bench-bal2-aaaaaaaaaaaaaaa], models: ['bal-*'], weight: 1}"
} > "$OUT/switchyard.yaml"
RUST_LOG=warn "${ON_SERVER[@]}" "$BIN_DIR/switchyard" serve -c "$OUT/switchyard.yaml" > "$OUT/switchyard.log" 2>&1 & SYPID=$!; pids+=($SYPID)
PORTS="$MOCK $NGINX $SY"
# variant NAME PORT ADMIN_PORT BINARY SERVER_EXTRA [SED_ARGS...]: the config above on
# other ports (SERVER_EXTRA appended to its `server:` line, SED_ARGS applied too),
# started with BINARY; its pid in VARIANT_PID. TLS_PORT (when set) is its TLS listener.
variant() {
  local name=$1 port=$2 admin=$3 bin=$4 extra=$5; shift 5
  local listen="127.0.0.1:$port"
  [ -n "${TLS_PORT:-}" ] && listen="['127.0.0.1:$port', {addr: '127.0.0.1:$TLS_PORT', tls: {cert: '$OUT/cert.pem', key: '$OUT/key.pem'}}]"
  sed -e "s#^listen: .*#listen: $listen#" -e "s/^admin: .*/admin: {listen: '127.0.0.1:$admin'}/" \
    -e "s#^server: .*#server: {threads: $WORKERS, pid_file: $OUT/$name.pid, upgrade_sock: $OUT/$name.sock}$extra#" \
    "$@" "$OUT/switchyard.yaml" > "$OUT/$name.yaml"
  RUST_LOG=warn "${ON_SERVER[@]}" "$bin" serve -c "$OUT/$name.yaml" > "$OUT/$name.log" 2>&1 & VARIANT_PID=$!; pids+=($VARIANT_PID)
  PORTS="$PORTS $port"
}
if [ -n "$BASELINE" ]; then
  TLS_PORT=$BL_TLS variant baseline "$BL" "$BL_ADMIN" "$BASELINE" ""; BLPID=$VARIANT_PID
fi
LIMITS='\nlimits: {rpm: 1000000, tpm: 1000000000, max_concurrent: 10000, queue: 1000}'
LIMITED_SED=(-e "s/^\(  - {name: c[0-9]*, key: [^}]*\)}/\1, rpm: 1000000, tpm: 1000000000, max_concurrent: 10000}/"
  -e "s/^  - name: mock$/  - name: mock\n    rpm: 1000000\n    tpm: 1000000000\n    max_concurrent: 10000/")
if [ -n "$LIMITED" ]; then
  # every limit this build has, set so high that none triggers: their cost alone
  variant limited "$LM" "$LM_ADMIN" "$BIN_DIR/switchyard" "$LIMITS" "${LIMITED_SED[@]}"
  LMPID=$VARIANT_PID
fi
if [ -n "$FLEET" ]; then
  # the same limits shared through Redis (on the load core, as a separate box would be)
  command -v redis-server >/dev/null || { echo "FLEET=1 needs redis-server: ./scripts/deps.sh bench" >&2; exit 1; }
  "${ON_LOAD[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no > "$OUT/redis.log" 2>&1 & pids+=($!)
  for mode in local strict; do
    port=$FL; admin=$FL_ADMIN; [ $mode = strict ] && { port=$FS; admin=$FS_ADMIN; }
    variant "fleet-$mode" "$port" "$admin" "$BIN_DIR/switchyard" \
      "$LIMITS\nstate: {redis: {url: 'redis://127.0.0.1:$REDIS_PORT', prefix: bench-$mode, limits: {mode: $mode}}}" "${LIMITED_SED[@]}"
    [ $mode = local ] && FLPID=$VARIANT_PID || FSPID=$VARIANT_PID
  done
fi
if [ -n "$CACHE" ]; then
  # the same config with the response cache on for the bench's models
  variant cached "$CA" "$CA_ADMIN" "$BIN_DIR/switchyard" "\ncache: {models: ['gpt-*'], max_bytes: 64MiB}"
  CAPID=$VARIANT_PID
fi
if [ -n "$TENANTS" ]; then
  [ "$CLIENTS" -gt 0 ] || { echo "TENANTS=1 needs CLIENTS (the YAML case it is compared with)" >&2; exit 1; }
  # the same config without its clients: they are made at run time below
  variant tenants "$TN" "$TN_ADMIN" "$BIN_DIR/switchyard" "" -e '/^clients:$/d' -e '/^  - {name: c[0-9]*, key: /d'
  TNPID=$VARIANT_PID
  # and the YAML clients in a process of their own that, like it, serves only the json case
  # (the main process serves every case: its heap and usage log are not alike)
  variant yaml "$YC" "$YC_ADMIN" "$BIN_DIR/switchyard" ""
  YCPID=$VARIANT_PID
fi
if [ -n "$QUIET" ]; then
  # the same config with the per-request series and the usage store off: what observing costs
  variant quiet "$QT" "$QT_ADMIN" "$BIN_DIR/switchyard" '\nmetrics: {enabled: false}\nstate: {usage: false}'
  QTPID=$VARIANT_PID
fi

for port in $PORTS; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
done
if [ -n "$TENANTS" ]; then
  # the YAML clients' names and keys, each with a daily token quota never reached
  for i in $(seq 1 "$CLIENTS"); do
    curl -sf -o /dev/null -X POST "http://127.0.0.1:$TN_ADMIN/admin/clients" -H 'content-type: application/json' \
      -d "{\"name\":\"c$i\",\"key\":\"bench-client-key-$(printf '%06d' "$i")-xxxxxxxx\",\"quotas\":[{\"per\":\"day\",\"tokens\":1000000000000}]}" \
      || { echo "cannot make run-time client c$i" >&2; exit 1; }
  done
fi
rss() { awk '/VmRSS/ {print $2}' "/proc/$SYPID/status"; }
RSS_IDLE=$(rss)

# A request body like a real client's: a system and a user message, max_tokens.
# body MODEL STREAM PAD_BYTES: the JSON (the user message padded to PAD_BYTES)
body() {
  python3 -c 'import json,sys
m, stream, pad = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
user = "Say hello in one short sentence."
if pad: user += " " + ("lorem ipsum dolor sit amet " * (pad // 27 + 1))[:pad]
b = {"model": m, "max_tokens": 256, "messages": [
  {"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
  {"role": "user", "content": user}]}
if stream: b["stream"] = True
print(json.dumps(b, separators=(",", ":")))' "$@"
}
# lua NAME MODEL STREAM PAD: a wrk script posting that body (and the body alone, for h2load)
lua() {
  body "$2" "$3" "$4" > "$OUT/$1.json"
  { echo 'wrk.method = "POST"'; echo 'wrk.headers["Content-Type"] = "application/json"'
    echo "local f = io.open(\"$OUT/$1.json\"); wrk.body = f:read(\"*l\"); f:close()"; } > "$OUT/$1.lua"
}
lua json gpt-4o-mini 0 0; lua stream gpt-4o-mini 1 0
lua agg agg-model 0 0; lua bal bal-model 0 0; lua syn syn-model 1 0
lua json16k gpt-4o-mini 0 16384; lua json128k gpt-4o-mini 0 131072
# msgs, msgsstream: the same call through Anthropic's Messages API (/v1/messages)
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for name, stream in (("msgs", False), ("msgsstream", True)):
    b = {"model": "gpt-4o-mini", "max_tokens": 256,
         "system": "You are a helpful assistant. Answer briefly and precisely.",
         "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
    if stream:
        b["stream"] = True
    open(f"{out}/{name}.json", "w").write(json.dumps(b, separators=(",", ":")) + "\n")
    open(f"{out}/{name}.lua", "w").write(
        'wrk.method = "POST"\nwrk.path = "/v1/messages"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{out}/{name}.json"); wrk.body = f:read("*l"); f:close()\n')
PY
# vary: json with a body unique per call (each wrk thread numbers its own)
lua vary gpt-4o-mini 0 0
cat >> "$OUT/vary.lua" <<'LUA'
local threads = 0
-- unique per wrk run (each case and round is one): a round never repeats another's bodies
local run = tostring(os.time()) .. "-" .. tostring(math.random(1e9))
function setup(thread) threads = threads + 1; thread:set("tid", run .. "-" .. threads) end
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, (wrk.body:gsub("Say hello", "Say hello " .. tid .. "-" .. n, 1)))
end
LUA

if [ "$CLIENTS" -gt 0 ]; then
  # nginx ignores the header; both switchyards check it against $CLIENTS keys
  CLIENT_KEY="bench-client-key-$(printf '%06d' $(( (CLIENTS + 1) / 2 )))-xxxxxxxx"
  for lua in json stream agg syn bal json16k json128k vary msgs msgsstream; do
    echo "wrk.headers[\"Authorization\"] = \"Bearer $CLIENT_KEY\"" >> "$OUT/$lua.lua"
  done
fi

NGXPID=$(pgrep -P "$(cat "$OUT/nginx.pid")" | head -1)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # user + system, in clock ticks
pid_of() { # the server process behind a port
  case $1 in $MOCK) echo $MOCKPID ;; $NGINX|$NGINX_TLS) echo $NGXPID ;; $BL|$BL_TLS) echo $BLPID ;;
    $LM) echo $LMPID ;; $QT) echo $QTPID ;; $CA) echo $CAPID ;; $TN) echo $TNPID ;; $YC) echo $YCPID ;; $FL) echo $FLPID ;; $FS) echo $FSPID ;; *) echo $SYPID ;; esac
}
run_case() { # name port lua round [scheme]
  local name=$1 port=$2 lua=$3 round=$4 scheme=${5:-http} pid before url
  pid=$(pid_of "$port"); url="$scheme://127.0.0.1:$port/v1/chat/completions"
  "${ON_LOAD[@]}" wrk -t1 -c"$CONNS" -d1s -s "$OUT/$lua.lua" "$url" > /dev/null 2>&1 || true
  before=$(cpu_ticks "$pid")
  "${ON_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$OUT/$lua.lua" "$url" > "$OUT/$name.$round.txt" 2>&1
  echo "cpu_ticks: $(( $(cpu_ticks "$pid") - before ))" >> "$OUT/$name.$round.txt"
  if [ "$port" = "$SY" ]; then rss >> "$OUT/rss"; fi
  [ "$round" = 1 ] && echo "$name" >> "$OUT/cases"
  return 0
}
# h2load NAME PORT ROUND: JSON calls over h2 with TLS, CONNS connections, one stream each
run_h2() {
  local name=$1 port=$2 round=$3 pid before auth=()
  pid=$(pid_of "$port")
  [ -n "${CLIENT_KEY:-}" ] && auth=(-H "authorization: Bearer $CLIENT_KEY")
  local args=(-c"$CONNS" -m1 -t1 -d "$OUT/json.json" -H 'content-type: application/json' "${auth[@]}")
  "${ON_LOAD[@]}" h2load "${args[@]}" -D 1 "https://127.0.0.1:$port/v1/chat/completions" > /dev/null 2>&1 || true
  before=$(cpu_ticks "$pid")
  "${ON_LOAD[@]}" h2load "${args[@]}" -D "${DURATION%s}" "https://127.0.0.1:$port/v1/chat/completions" > "$OUT/$name.$round.raw" 2>&1 || true
  # in wrk's words, for the report below
  python3 - "$OUT/$name.$round.raw" > "$OUT/$name.$round.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", t)
done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", t)
codes = re.search(r"status codes: (\d+) 2xx", t)
print(f"Requests/sec: {rps.group(1) if rps else 0}")
print(f"{done.group(1) if done else 0} requests in")
ok = int(codes.group(1)) if codes else 0
n = int(done.group(1)) if done else 0
if n - ok: print(f"Non-2xx or 3xx responses: {n - ok}")
PY
  echo "cpu_ticks: $(( $(cpu_ticks "$pid") - before ))" >> "$OUT/$name.$round.txt"
  [ "$round" = 1 ] && echo "$name" >> "$OUT/cases"
  return 0
}
# Rounds interleave the targets so that a noisy neighbour hits all of them alike;
# the report takes each case's median round.
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS..." >&2
  for lua in json stream; do
    run_case "mock-$lua" "$MOCK" "$lua" "$round"
    run_case "nginx-$lua" "$NGINX" "$lua" "$round"
    run_case "switchyard-$lua" "$SY" "$lua" "$round"
    if [ -n "$BASELINE" ]; then run_case "baseline-$lua" "$BL" "$lua" "$round"; fi
    if [ -n "$LIMITED" ] && [ "$lua" = json ]; then run_case "limited-json" "$LM" json "$round"; fi
    if [ -n "$CACHE" ] && [ "$lua" = json ]; then
      run_case "switchyard-vary" "$SY" vary "$round"
      run_case "cached-hit" "$CA" json "$round"; run_case "cached-miss" "$CA" vary "$round"
    fi
    if [ -n "$FLEET" ] && [ "$lua" = json ]; then
      run_case "fleet-local-json" "$FL" json "$round"; run_case "fleet-strict-json" "$FS" json "$round"
    fi
    if [ -n "$QUIET" ] && [ "$lua" = json ]; then run_case "quiet-json" "$QT" json "$round"; fi
    if [ -n "$TENANTS" ] && [ "$lua" = json ]; then
      run_case "yaml-json" "$YC" json "$round"; run_case "tenants-json" "$TN" json "$round"
    fi
  done
  if [ "$TLS" = 1 ]; then
    run_case "nginx-tls" "$NGINX_TLS" json "$round" https
    run_case "switchyard-tls" "$SY_TLS" json "$round" https
    if [ -n "$BASELINE" ]; then run_case "baseline-tls" "$BL_TLS" json "$round" https; fi
  fi
  if [ "$SIZES" = 1 ]; then
    for lua in json16k json128k; do
      run_case "nginx-$lua" "$NGINX" "$lua" "$round"
      run_case "switchyard-$lua" "$SY" "$lua" "$round"
      if [ -n "$BASELINE" ]; then run_case "baseline-$lua" "$BL" "$lua" "$round"; fi
    done
  fi
  if [ "$H2" = 1 ]; then
    run_h2 "nginx-h2" "$NGINX_TLS" "$round"
    run_h2 "switchyard-h2" "$SY_TLS" "$round"
  fi
  run_case "switchyard-aggregated" "$SY" agg "$round"     # stream-only upstream, JSON client
  run_case "switchyard-synthesized" "$SY" syn "$round"    # JSON-only upstream, streaming client
  run_case "switchyard-balanced" "$SY" bal "$round"       # JSON, two weighted upstreams for the model
  run_case "switchyard-messages" "$SY" msgs "$round"      # an Anthropic Messages client, JSON
  run_case "switchyard-messages-stream" "$SY" msgsstream "$round"   # the same, streamed
done
RSS_LOAD=$(sort -n "$OUT/rss" | tail -1)

python3 - "$OUT" "$RSS_IDLE" "$RSS_LOAD" "$CONNS" "$DURATION" "$CHUNKS" "$KEYS" "$WORKERS" "$(getconf CLK_TCK)" "$CLIENTS" <<'PY'
import re, sys, os
out, rss_idle, rss_load, conns, dur, chunks, keys, workers, tck, clients = sys.argv[1:]
def parse_one(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    def lat(p):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, t, re.M)
        if not m:
            return float("nan")   # h2load reports no percentiles
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v * 1000 if u == "s" else v
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    sock = re.search(r"Socket errors: (.*)", t)
    n = int(re.search(r"(\d+) requests in", t).group(1))
    ticks = int(re.search(r"cpu_ticks: (-?\d+)", t).group(1))
    cpu = ticks * 1e6 / int(tck) / max(n, 1)   # server CPU per request, microseconds
    return rps, lat(50), lat(99), (int(errs.group(1)) if errs else 0), (sock.group(1) if sock else ""), cpu
import glob, statistics
def parse(name):
    runs = [parse_one(p) for p in sorted(glob.glob(os.path.join(out, name + ".*.txt")))]
    med = sorted(runs, key=lambda r: r[0])[len(runs) // 2]   # the median round by req/s
    return (med[0], statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs),
            sum(r[3] for r in runs), med[4], statistics.median(r[5] for r in runs), [r[0] for r in runs],
            [r[5] for r in runs])
cases = [l.strip() for l in open(os.path.join(out, "cases"))]
res = {c: parse(c) for c in cases}
rounds = len(glob.glob(os.path.join(out, cases[0] + ".*.txt")))
print(f"\nSwitchyard benchmark: median of {rounds} interleaved rounds, {conns} connections, {dur} per case, stream of {chunks} chunks, {keys} key(s) per upstream, {clients} client key(s), {workers} worker(s) each for nginx and switchyard")
print(f"{'case':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'cpu us/req':>12}{'non-2xx':>9}")
for c in cases:
    r = res[c]
    print(f"{c:<28}{r[0]:>10.0f}{r[1]:>10.3f}{r[2]:>10.3f}{r[5]:>12.1f}{r[3]:>9}  {r[4]}")
print("(cpu us/req: user+system CPU of the server process under test per request: the mock, nginx's worker, or switchyard)")
print()
for kind in ("json", "stream", "tls", "json16k", "json128k", "h2"):
    s, n = res.get(f"switchyard-{kind}"), res.get(f"nginx-{kind}")
    if s and n:
        rps = [a / b for a, b in zip(s[6], n[6])]
        cpu = [a / b for a, b in zip(s[7], n[7])]
        rounds = lambda xs: " ".join(f"{x:.2f}" for x in xs)
        print(f"{kind:<8} switchyard/nginx req/s = {s[0]/n[0]:.2f}x   p50 diff = {s[1]-n[1]:+.3f} ms   p99 diff = {s[2]-n[2]:+.3f} ms   (per round: {rounds(rps)})")
        # a round runs the targets back to back, so its ratio compares like with like on a noisy host
        print(f"{kind:<8} switchyard/nginx per round, median: req/s {statistics.median(rps):.2f}x, cpu us/req {statistics.median(cpu):.2f}x   (cpu per round: {rounds(cpu)})")
for kind in ("json", "stream", "tls", "json16k", "json128k"):
    s, b, n = res.get(f"switchyard-{kind}"), res.get(f"baseline-{kind}"), res.get(f"nginx-{kind}")
    if s and b and n:
        per_round = " ".join(f"{x/y:.2f}" for x, y in zip(s[6], b[6]))
        print(f"{kind:<8} baseline/nginx req/s = {b[0]/n[0]:.2f}x   switchyard/baseline = {s[0]/b[0]:.2f}x   cpu us/req {b[5]:.1f} -> {s[5]:.1f}   (per round: {per_round})")
s, l = res.get("switchyard-json"), res.get("limited-json")
if s and l:
    per_round = " ".join(f"{x/y:.2f}" for x, y in zip(l[6], s[6]))
    print(f"json    limited/switchyard req/s = {l[0]/s[0]:.2f}x   cpu us/req {s[5]:.1f} -> {l[5]:.1f}   (every limit on, none reached; per round: {per_round})")
for mode in ("local", "strict"):
    f = res.get(f"fleet-{mode}-json")
    if l and f:
        per_round = " ".join(f"{x/y:.2f}" for x, y in zip(f[6], l[6]))
        print(f"json    fleet-{mode}/limited req/s = {f[0]/l[0]:.2f}x   cpu us/req {l[5]:.1f} -> {f[5]:.1f}   (the same limits shared through Redis; per round: {per_round})")
v, h, m = res.get("switchyard-vary"), res.get("cached-hit"), res.get("cached-miss")
if s and h:
    print(f"json    cached-hit/switchyard req/s = {h[0]/s[0]:.2f}x   cpu us/req {s[5]:.1f} -> {h[5]:.1f}   (every call answered from the cache)")
if v and m:
    per_round = " ".join(f"{x/y:.2f}" for x, y in zip(m[6], v[6]))
    print(f"json    cached-miss/no-cache req/s = {m[0]/v[0]:.2f}x   cpu us/req {v[5]:.1f} -> {m[5]:.1f}   (a body unique per call: looked up, stored; per round: {per_round})")
t, y = res.get("tenants-json"), res.get("yaml-json")
if y and t:
    per_round = " ".join(f"{x/z:.2f}" for x, z in zip(t[6], y[6]))
    print(f"json    tenants/yaml req/s = {t[0]/y[0]:.2f}x   cpu us/req {y[5]:.1f} -> {t[5]:.1f}   ({clients} clients made at run time, each with a quota, vs the same in YAML; per round: {per_round})")
q = res.get("quiet-json")
if s and q:
    per_round = " ".join(f"{x/y:.2f}" for x, y in zip(s[6], q[6]))
    print(f"json    switchyard/quiet req/s = {s[0]/q[0]:.2f}x   cpu us/req {q[5]:.1f} -> {s[5]:.1f}   (metrics and usage recording on vs off; per round: {per_round})")
pairs = [("switchyard-aggregated", "switchyard-stream", "aggregated (stream upstream -> JSON client)"),
         ("switchyard-synthesized", "switchyard-json", "synthesized (JSON upstream -> stream client)"),
         ("switchyard-balanced", "switchyard-json", "balanced (two weighted upstreams, JSON)"),
         ("switchyard-messages", "switchyard-json", "messages (Anthropic client -> chat upstream, JSON)"),
         ("switchyard-messages-stream", "switchyard-stream", "messages (Anthropic client -> chat upstream, stream)")]
for case, base, what in pairs:
    if case in res and base in res:
        print(f"{what}: {res[case][0]:.0f} req/s vs pass-through {res[base][0]:.0f}; time per request {res[base][0]/res[case][0]:.2f}x of pass-through")
print(f"switchyard RSS: idle {int(rss_idle)/1024:.1f} MiB, under load {int(rss_load)/1024:.1f} MiB")
PY
