#!/usr/bin/env bash
# Scale benchmark: STREAMS concurrent slow streaming chat requests (one event
# per GAP_MS from the mock upstream), held open through nginx proxy_pass and
# through Switchyard in one run, on loopback only. Prints, for each: RSS idle,
# at peak and after the streams closed, memory per open stream, events/s
# delivered, and whether every stream got every event. Bounded: each target
# runs about EVENTS x GAP_MS plus the ramp-up.
#
#   ./bench/streams.sh                       # 10,000 streams of 30 events, one a second
#   STREAMS=2000 EVENTS=10 ./bench/streams.sh
#   NO_BUILD=1 BIN_DIR=/tmp/bins ./bench/streams.sh
#   BASELINE=/path/to/old/switchyard ./bench/streams.sh   # also measure another build
#   SY_UPSTREAM=", http2: true" ./bench/streams.sh         # more settings on this build's upstream
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS="${STREAMS:-10000}"
EVENTS="${EVENTS:-30}"
GAP_MS="${GAP_MS:-1000}"
WORKERS="${WORKERS:-2}"
RAMP="${RAMP:-2000}"        # new streams per second
BASE_PORT="${BASE_PORT:-19200}"
MOCK=$BASE_PORT; NGINX=$((BASE_PORT+1)); SY=$((BASE_PORT+2)); SY_ADMIN=$((BASE_PORT+3))
BL=$((BASE_PORT+4)); BL_ADMIN=$((BASE_PORT+5))
BASELINE="${BASELINE:-}"
OUT=$(mktemp -d /tmp/switchyard-streams.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT

command -v nginx >/dev/null || { echo "needs nginx: ./scripts/deps.sh bench" >&2; exit 1; }

# every stream costs a descriptor in the client, two in a proxy, one in the mock;
# each process runs under its own limit, so a proxy's 2N (plus a few) is the need
NEED=$(( 2 * STREAMS + 64 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED" ]; then
  if ! ulimit -n "$NEED" 2>/dev/null; then
    ulimit -Hn "$NEED" 2>/dev/null && ulimit -n "$NEED" 2>/dev/null || {
      HARD=$(ulimit -Hn)
      echo "cannot raise the open-file limit to $NEED (hard limit $HARD; raise it as root, e.g. ulimit -Hn $NEED);" >&2
      STREAMS=$(( (HARD - 64) / 2 ))
      echo "running $STREAMS streams instead" >&2
    }
  fi
fi
echo "open-file limit: $(ulimit -n)" >&2

BIN_DIR="${BIN_DIR:-./target/release}"
if [ -z "${NO_BUILD:-}" ]; then
  echo "building release binaries..." >&2
  cargo build --release --quiet --features test-support --bin switchyard --bin mock-upstream --bin stream-load
  BIN_DIR=./target/release
fi

"$BIN_DIR/mock-upstream" "127.0.0.1:$MOCK" 2 "$EVENTS" "$GAP_MS" > "$OUT/mock.log" 2>&1 & pids+=($!)

cat > "$OUT/nginx.conf" <<NGX
worker_processes $WORKERS;
worker_rlimit_nofile $NEED;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections $NEED; }
http {
  access_log off;
  client_body_temp_path $OUT; proxy_temp_path $OUT; fastcgi_temp_path $OUT; uwsgi_temp_path $OUT; scgi_temp_path $OUT;
  upstream mock { server 127.0.0.1:$MOCK; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-bench-key";
      proxy_buffering off;
      proxy_read_timeout 120s;
    }
  }
}
NGX
nginx -c "$OUT/nginx.conf"

write_conf() { # port admin_port extra_server_settings [extra_upstream_settings]
  cat <<YAML
listen: 127.0.0.1:$1
admin: {listen: '127.0.0.1:$2'}
server: {threads: $WORKERS$3}
timeouts: {idle: 60s}
upstreams:
  - {name: mock, base_url: 'http://127.0.0.1:$MOCK/v1', keys: [sk-bench-key-aaaaaaaaaaaa], models: ['gpt-*']${4:-}}
YAML
}
write_conf "$SY" "$SY_ADMIN" "" "${SY_UPSTREAM:-}" > "$OUT/switchyard.yaml"
RUST_LOG=warn "$BIN_DIR/switchyard" serve -c "$OUT/switchyard.yaml" > "$OUT/switchyard.log" 2>&1 & SYPID=$!; pids+=($SYPID)
TARGETS="nginx:$NGINX switchyard:$SY"
if [ -n "$BASELINE" ]; then
  write_conf "$BL" "$BL_ADMIN" ", pid_file: $OUT/baseline.pid, upgrade_sock: $OUT/baseline.sock" > "$OUT/baseline.yaml"
  RUST_LOG=warn "$BASELINE" serve -c "$OUT/baseline.yaml" > "$OUT/baseline.log" 2>&1 & BLPID=$!; pids+=($BLPID)
  TARGETS="$TARGETS baseline:$BL"
fi
for port in $MOCK $SY ${BASELINE:+$BL}; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
done

# RSS (KiB) of a target: nginx's master and workers together, a switchyard process alone
rss_of() {
  local pids_
  case $1 in
    nginx) pids_="$(cat "$OUT/nginx.pid") $(pgrep -P "$(cat "$OUT/nginx.pid")" | tr '\n' ' ')" ;;
    switchyard) pids_=$SYPID ;;
    baseline) pids_=$BLPID ;;
  esac
  local total=0
  for p in $pids_; do total=$(( total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status") )); done
  echo "$total"
}

echo "target streams events_each idle_MiB peak_MiB after_MiB per_stream_KB events_per_s complete every_event" > "$OUT/report"
for t in $TARGETS; do
  name=${t%%:*}; port=${t##*:}
  echo "$name: $STREAMS streams of $EVENTS events, one per ${GAP_MS}ms..." >&2
  idle=$(rss_of "$name"); peak=$idle
  "$BIN_DIR/stream-load" "127.0.0.1:$port" "$STREAMS" $(( EVENTS + 2 )) "$RAMP" > "$OUT/$name.load" 2>&1 & LOAD=$!
  while kill -0 "$LOAD" 2>/dev/null; do
    r=$(rss_of "$name"); [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.5
  done
  wait "$LOAD" || true
  sleep 5
  after=$(rss_of "$name")
  summary=$(grep '^streams' "$OUT/$name.load" || echo "streams $STREAMS complete 0 failed $STREAMS every_event false events 0 seconds 0 events_per_s 0")
  set -- $summary
  complete=$4; every=$8; eps=${14}
  awk -v n="$name" -v s="$STREAMS" -v e="$EVENTS" -v i="$idle" -v p="$peak" -v a="$after" -v eps="$eps" -v c="$complete" -v ev="$every" \
    'BEGIN { printf "%s %d %d %.1f %.1f %.1f %.1f %s %d %s\n", n, s, e, i/1024, p/1024, a/1024, (p-i)/s, eps, c, ev }' >> "$OUT/report"
done
echo
echo "Stream scale benchmark ($WORKERS workers each, loopback; per_stream = (peak - idle) / streams):"
column -t "$OUT/report"
