#!/usr/bin/env bash
# Deployment check: the systemd unit passes `systemd-analyze verify`, and
# `systemctl reload` (systemd/switchyard-reload) works as the unit documents,
# run outside systemd with the unit's paths moved into a temporary directory:
#   a config reload (SIGHUP, same process), a binary upgrade (a new binary is
#   installed: the new process takes the sockets over, the old one drains and
#   exits, the pid file names the new one), a forced upgrade while the previous
#   old process still drains, and an upgrade whose new process fails (the
#   reload fails, the running process keeps serving and stays in the pid file).
# Requests to the demo upstream run throughout and must all answer 200.
#   SWITCHYARD_BIN=target/debug/switchyard scripts/deploy-check.sh
# Needs curl; systemd-analyze is optional (skipped when absent). Takes about
# 30 s, at most 60; stops everything it starts; exits 1 on any failure.
# Listens on 127.0.0.1, ports from DEPLOY_CHECK_PORT (default 24300: below the ephemeral range, so no client socket of an earlier test holds it) up.
# DEPLOY_CHECK_KEEP=1 keeps the temporary directory (logs) after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${SWITCHYARD_BIN:-target/debug/switchyard}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
UNIT=$ROOT/systemd/switchyard.service
DROPIN=$ROOT/systemd/switchyard-443.conf
RELOAD=$ROOT/systemd/switchyard-reload
LIMIT=55 # seconds; every wait below is bounded and checks this too

tmp=$(mktemp -d /tmp/switchyard-deploy-check.XXXXXX)
load=
started=()

say() { printf '%s\n' "deploy-check: $*"; }
fail() {
    say "FAIL: $*" >&2
    if [ -s "$tmp/log/switchyard.log" ]; then
        echo "--- last lines of server.error_log:" >&2
        tail -n 25 "$tmp/log/switchyard.log" >&2
    fi
    exit 1
}
in_time() { [ "$SECONDS" -lt "$LIMIT" ] || fail "over ${LIMIT}s: giving up"; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
ours() { alive "$1" && grep -qF "$tmp" "/proc/$1/cmdline" 2>/dev/null; }
pid_file() { { tr -dc 0-9 < "$tmp/run/switchyard.pid"; } 2>/dev/null || true; }
track() { started+=("$1"); }

cleanup() {
    local rc=$? p i
    trap - EXIT INT TERM
    if [ -n "$load" ]; then kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true; fi
    for p in "${started[@]}" "$(pid_file)"; do
        if ours "$p"; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    for p in "${started[@]}" "$(pid_file)"; do
        i=0
        while ours "$p" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        if ours "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    if [ "$rc" != 0 ] && [ -n "${DEPLOY_CHECK_KEEP:-}" ]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

[ -x "$BIN" ] || fail "no switchyard binary at $BIN (set SWITCHYARD_BIN)"
command -v curl >/dev/null || fail "curl is needed"
mkdir -p "$tmp/bin" "$tmp/run" "$tmp/log" "$tmp/state" "$tmp/units/switchyard.service.d"
chmod 0700 "$tmp/run" # RuntimeDirectoryMode=0700
cp "$BIN" "$tmp/bin/switchyard"
install -m 0755 "$RELOAD" "$tmp/bin/switchyard-reload"

# --- (a) the unit ----------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    # the unit as shipped, its two programs pointed at the copies above (verify
    # wants them to exist), with the optional :443 drop-in
    sed -e "s#/usr/local/bin/switchyard#$tmp/bin/switchyard#g" \
        -e "s#/usr/local/lib/switchyard/switchyard-reload#$tmp/bin/switchyard-reload#g" \
        "$UNIT" > "$tmp/units/switchyard.service"
    cp "$DROPIN" "$tmp/units/switchyard.service.d/443.conf"
    for variant in plain drop-in; do
        [ $variant = plain ] && dir=$tmp/units/plain || dir=$tmp/units
        if [ $variant = plain ]; then mkdir -p "$dir" && cp "$tmp/units/switchyard.service" "$dir/"; fi
        out=$(SYSTEMD_UNIT_PATH="$dir:" systemd-analyze verify switchyard.service 2>&1) \
            || fail "systemd-analyze verify ($variant): $out"
        if grep -i switchyard <<<"$out"; then fail "systemd-analyze verify ($variant) complains"; fi
    done
    say "systemd-analyze verify: switchyard.service OK, with switchyard-443.conf OK"
else
    say "systemd-analyze not found: unit not verified (apt-get install systemd)"
fi

# --- (b) reload and upgrade outside systemd --------------------------------
free_port() {
    local p=$1
    while (: < "/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
API=$(free_port "${DEPLOY_CHECK_PORT:-24300}")
ADMIN=$(free_port $((API + 1)))
conf=$tmp/switchyard.yaml
cat > "$conf" <<YAML
# deploy-check: the unit's files, under $tmp
listen: 127.0.0.1:$API
admin: {listen: '127.0.0.1:$ADMIN'}
server:
  pid_file: $tmp/run/switchyard.pid      # /run/switchyard/switchyard.pid
  upgrade_sock: $tmp/run/upgrade.sock    # /run/switchyard/upgrade.sock
  error_log: $tmp/log/switchyard.log     # /var/log/switchyard/switchyard.log
  grace_period: 2s
  shutdown_timeout: 1s
state: {path: '\${DEPLOY_CHECK_STATE:-$tmp/state}'}   # /var/lib/switchyard/state
log: {level: info}
upstreams:
  - {name: demo, kind: demo}
YAML
# what the unit gives its processes
export SWITCHYARD_BIN=$tmp/bin/switchyard SWITCHYARD_CONFIG=$conf RUNTIME_DIRECTORY=$tmp/run
unset RUST_LOG
umask 077

BODY='{"model":"demo-chat","messages":[{"role":"user","content":"deploy check"}]}'
chat() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'content-type: application/json' \
        -d "$BODY" "http://127.0.0.1:$API/v1/chat/completions" || true
}
health_pid() {
    curl -s --max-time 2 "http://127.0.0.1:$API/health" 2>/dev/null | tr -d ' ' \
        | sed -n 's/.*"pid":\([0-9]*\).*/\1/p' || true
}
# until /health is answered by process $1 (and only by it when $2 is given)
wait_served_by() {
    local want=$1 only=${2:-} i=0 hits=0
    while :; do
        in_time
        if [ "$(health_pid)" = "$want" ]; then
            hits=$((hits + 1))
            if [ -z "$only" ] || [ $hits -ge 5 ]; then return 0; fi
        else
            hits=0
        fi
        i=$((i + 1))
        [ $i -lt 200 ] || fail "/health not answered by process $want"
        sleep 0.05
    done
}
wait_gone() {
    local p=$1 i=0
    while alive "$p"; do
        in_time
        i=$((i + 1))
        [ $i -lt 200 ] || fail "process $p still running 20s after it was told to quit"
        sleep 0.1
    done
}
log_mark() { wc -l < "$tmp/log/switchyard.log" 2>/dev/null || echo 0; }
log_since() { tail -n +$(($1 + 1)) "$tmp/log/switchyard.log"; }
# ERROR lines since a mark, but for two of Pingora's that a healthy gateway logs:
# the new process's "not yet" while it waits for the sockets (transfer_fd.rs),
# and a race in its upstream connection pool (connectors/mod.rs; no request fails)
KNOWN_ERRORS='No incoming socket transfer, sleep 1s and try again|failed to acquire reusable stream'
unexpected_errors() {
    log_since "$1" | grep ' ERROR ' | grep -Ev "$KNOWN_ERRORS" || true
}
reload() { # MAINPID as systemd would pass it
    timeout 25 "$tmp/bin/switchyard-reload" "$1" 2> "$tmp/reload.err"
}

# ExecStart (WorkingDirectory=/var/lib/switchyard)
(cd "$tmp/state" && "$SWITCHYARD_BIN" serve -d -c "$conf") || fail "serve -d failed"
i=0
until [ -n "$(pid_file)" ]; do i=$((i + 1)); [ $i -lt 100 ] || fail "no pid file"; sleep 0.05; done
p0=$(pid_file); track "$p0"
wait_served_by "$p0"
for _ in 1 2 3; do c=$(chat); [ "$c" = 200 ] || fail "demo request before the upgrade: $c"; done
say "started: process $p0 (serve -d) on 127.0.0.1:$API serves the demo upstream"

# requests all along, to the end
: > "$tmp/codes"
( while :; do chat >> "$tmp/codes"; echo >> "$tmp/codes"; sleep 0.05; done ) </dev/null >/dev/null 2>&1 &
load=$!

# 1. config reload: same binary, SIGHUP, same process
mark=$(log_mark)
reload "$p0" || fail "config reload failed: $(cat "$tmp/reload.err")"
grep -q 'config reload: SIGHUP sent' "$tmp/reload.err" || fail "expected a config reload: $(cat "$tmp/reload.err")"
i=0
until log_since "$mark" | grep -q 'SIGHUP: reloading the config'; do
    in_time; i=$((i + 1)); [ $i -lt 50 ] || fail "the process did not log the reload"; sleep 0.1
done
if ! { [ "$(pid_file)" = "$p0" ] && alive "$p0"; }; then fail "a config reload changed the process"; fi
[ -z "$(unexpected_errors "$mark")" ] || fail "ERROR lines on a config reload: $(unexpected_errors "$mark")"
say "1. config reload: SIGHUP to $p0, same process, pid file unchanged"

# 2. binary upgrade: a new binary is installed (new inode), then reload
mark=$(log_mark)
cp "$BIN" "$tmp/bin/switchyard.new" && mv -f "$tmp/bin/switchyard.new" "$tmp/bin/switchyard"
t0=$SECONDS
reload "$p0" || fail "upgrade failed: $(cat "$tmp/reload.err")"
p1=$(pid_file); track "$p1"
if ! { [ "$p1" != "$p0" ] && alive "$p1"; }; then fail "the pid file does not name a new process ($p1)"; fi
grep -q "took over from process $p0" "$tmp/reload.err" || fail "$(cat "$tmp/reload.err")"
wait_served_by "$p1"
say "2. binary upgrade: process $p1 took over in $((SECONDS - t0))s; $p0 drains"
upgrade_errors=$(log_since "$mark" | grep ' ERROR ' || true)

# 3. forced upgrade (marker) while $p0 still drains: systemd's MAINPID is still
#    $p0, the script must act on the pid file's process $p1
alive "$p0" || say "   (process $p0 already gone: step 3 does not overlap a drain)"
mark3=$(log_mark)
touch "$tmp/run/upgrade"
reload "$p0" || fail "forced upgrade failed: $(cat "$tmp/reload.err")"
p2=$(pid_file); track "$p2"
if ! { [ "$p2" != "$p1" ] && [ "$p2" != "$p0" ] && alive "$p2"; }; then
    fail "the pid file does not name a new process ($p2)"
fi
grep -q "took over from process $p1" "$tmp/reload.err" || fail "$(cat "$tmp/reload.err")"
[ ! -e "$tmp/run/upgrade" ] || fail "the upgrade marker was not removed"
say "3. forced upgrade (touch upgrade): process $p2 took over from $p1 (MAINPID $p0 ignored)"
upgrade_errors+=$'\n'$(log_since "$mark3" | grep ' ERROR ' || true)

wait_gone "$p0"
wait_gone "$p1"
wait_served_by "$p2" only
[ -z "$(unexpected_errors "$mark")" ] || fail "unexpected ERROR lines during the upgrades: $(unexpected_errors "$mark")"
say "   old processes $p0 and $p1 exited; only $p2 answers; pid file: $(pid_file)"

# 4. a new binary whose process fails while starting (its state
#    directory cannot be created; `serve -u -d` exits 1 before any pid file
#    is written): the reload fails, $p2 keeps serving
ln "$tmp/bin/switchyard" "$tmp/bin/switchyard.real"
cat > "$tmp/bin/switchyard.new" <<SH
#!/bin/sh
# a broken release: check passes, serve cannot open its store
[ "\$1" = serve ] && export DEPLOY_CHECK_STATE=/proc/deploy-check/state
exec "$tmp/bin/switchyard.real" "\$@"
SH
chmod 0755 "$tmp/bin/switchyard.new" && mv -f "$tmp/bin/switchyard.new" "$tmp/bin/switchyard"
mark=$(log_mark)
if reload "$p2"; then fail "a reload with a failing new process succeeded: $(cat "$tmp/reload.err")"; fi
grep -q "keeps serving" "$tmp/reload.err" || fail "$(cat "$tmp/reload.err")"
[ "$(pid_file)" = "$p2" ] || fail "the pid file names $(pid_file), want $p2"
alive "$p2" || fail "process $p2 died"
wait_served_by "$p2" only
say "4. failing upgrade: the reload fails, the pid file still names $p2, which keeps serving:"
sed 's/^/   | /' "$tmp/reload.err"
mv -f "$tmp/bin/switchyard.real" "$tmp/bin/switchyard"

# requests all along
kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true; load=
total=$(grep -c . "$tmp/codes" || true)
bad=$(grep -v '^200$' "$tmp/codes" | grep . | sort | uniq -c | tr '\n' ' ' || true)
[ "$total" -ge 50 ] || fail "only $total requests were sent"
[ -z "$bad" ] || fail "not every request got 200: $bad (of $total)"
say "requests during all of it: $total, every one 200"

# UMask=0077: nothing the gateway wrote is readable by others
loose=$(find "$tmp/state" "$tmp/run" "$tmp/log" -mindepth 1 -perm /077 ! -type s)
[ -z "$loose" ] || fail "files readable beyond their owner under umask 077: $loose"
say "umask 077: the $(find "$tmp/state" "$tmp/run" "$tmp/log" -mindepth 1 | wc -l) files and directories written are their owner's only"

# systemctl stop: SIGTERM, the process drains and exits
kill -TERM "$p2"
wait_gone "$p2"
say "stopped: process $p2 exited on SIGTERM"

echo "--- ERROR lines logged during the two upgrades (Pingora's, see KNOWN_ERRORS):"
grep . <<<"$upgrade_errors" | sed 's/^/   | /' || echo "   (none)"
echo "--- ERROR lines of the whole run, by message:"
grep -h ' ERROR ' "$tmp/log/switchyard.log" | sed 's/^\[[^ ]* /[/' | sort | uniq -c | sed 's/^/   /' || echo "   (none)"
say "OK (${SECONDS}s)"
