#!/usr/bin/env bash
# model-gw against nginx, both in front of the inference fixture, measured with wrk.
# See bench/README.md ("model_gw.sh"). Everything runs on 127.0.0.1 from a temporary directory
# and is stopped on exit; every wait is bounded.
#
#   ninja -C build && bench/model_gw.sh            # DURATION=10 s per run by default
#   DURATION=30 CONNECTIONS=64 bench/model_gw.sh
#
# Exit status: 0 after a complete run (even when model-gw misses its targets), 1 when something
# failed (a daemon did not start, a sanity check or wrk failed), 2 when a prerequisite is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${TRIPLANE_BUILD:-$ROOT/build}
DURATION=${DURATION:-10}              # seconds per wrk run
CONNECTIONS=${CONNECTIONS:-32}        # wrk connections for the loaded runs
THREADS=${THREADS:-2}                 # wrk threads for the loaded runs
FIXTURE_WORKERS=${FIXTURE_WORKERS:-2} # inference-fixture worker threads
GW_WORKERS=${GW_WORKERS:-2}           # model-gw worker threads (nginx: worker_processes auto)

FIXTURE_BIN=$BUILD/tests/fixtures/inference-fixture
MODEL_GW_BIN=$BUILD/model-gw/model-gw
GWCTL_BIN=$BUILD/gwctl/gwctl
CHAT_LUA=$ROOT/bench/model_gw_chat.lua
STREAM_LUA=$ROOT/bench/model_gw_stream.lua
FIXTURE_MODEL=fixture-model # what the fixture serves
GW_MODEL=bench              # model-gw's public name for it
PROMPT='one two three four five six seven'

die() {
    echo "model_gw.sh: $*" >&2
    local f # the daemons' own words, before cleanup removes them
    for f in "${DIR:-}"/fixture.err "${DIR:-}"/model-gw.err "${DIR:-}"/nginx/error.log; do
        [[ ! -s $f ]] || { echo "--- ${f#"$DIR"/}, last 20 lines:" >&2; tail -20 "$f" >&2; }
    done
    exit 1
}

for v in DURATION CONNECTIONS THREADS FIXTURE_WORKERS GW_WORKERS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "model_gw.sh: $v must be a positive integer" >&2; exit 2; }
done

# ---- prerequisites ----

for b in "$FIXTURE_BIN" "$MODEL_GW_BIN" "$GWCTL_BIN"; do
    [[ -x $b ]] || { echo "model_gw.sh: $b is missing; build first: ninja -C ${BUILD#"$ROOT"/}" >&2; exit 2; }
done

find_nginx() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[[ -n $(find_nginx) ]] || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "model_gw.sh: installing ${missing[*]} with apt-get" >&2
        # (On a host running systemd, installing nginx also starts the distribution's nginx
        # service on port 80; this benchmark does not use it.)
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
            { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } ||
            { echo "model_gw.sh: apt-get install ${missing[*]} failed" >&2; exit 2; }
    else
        echo "model_gw.sh: missing ${missing[*]}; install with:" >&2
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        exit 2
    fi
fi
NGINX_BIN=$(find_nginx)

# ---- processes and teardown ----

DIR=$(mktemp -d "${TMPDIR:-/tmp}/tp-bench-model-gw.XXXXXX")
FIXTURE_PID='' GW_PID='' NGINX_PID='' WRK_PID=''

stop_pid() { # SIGTERM, wait up to 10 s, then SIGKILL
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "model_gw.sh: pid $pid did not exit within 10 s of SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$WRK_PID"
    stop_pid "$NGINX_PID"
    stop_pid "$GW_PID"
    stop_pid "$FIXTURE_PID"
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_until SECONDS PID WHAT COMMAND...: polls COMMAND every 0.1 s while PID lives.
wait_until() {
    local secs=$1 pid=$2 what=$3 i
    shift 3
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up"
        sleep 0.1
    done
    die "$what did not start within $secs s"
}

# Ports the machine listens on (TCP, IPv4 and IPv6), from /proc (state 0A is LISTEN).
listening_ports() {
    local local_addr st
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _ local_addr _ st _; do
        [[ $st == 0A ]] && echo $((16#${local_addr##*:}))
    done | sort -u
}
pick_port() {
    local used p i
    used=$(listening_ports)
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 40000))
        grep -qx "$p" <<<"$used" || { echo "$p"; return 0; }
    done
    die "no free port found"
}

export TRIPLANE_STORE=$DIR/triplane.db TRIPLANE_CONTROL_DIR=$DIR/run
unset TRIPLANE_CONFIG
gwctl() { timeout 30 "$GWCTL_BIN" "$@"; }

# 1. the fixture
"$FIXTURE_BIN" --port 0 --host 127.0.0.1 --workers "$FIXTURE_WORKERS" >"$DIR/fixture.out" 2>"$DIR/fixture.err" &
FIXTURE_PID=$!
wait_until 20 "$FIXTURE_PID" inference-fixture grep -q '^listening http://' "$DIR/fixture.out"
FIXTURE_URL=$(sed -n 's|^listening \(http://[^ ]*\).*|\1|p' "$DIR/fixture.out" | head -1)
FIXTURE_PORT=${FIXTURE_URL##*:}

# 2. model-gw, with its store and control socket in DIR
cat >"$DIR/triplane.yaml" <<EOF
common:
  log_level: warn
store:
  path: $DIR/triplane.db
control:
  dir: $DIR/run
model_gw:
  workers: $GW_WORKERS
  listen:
    - host: 127.0.0.1
      port: 0
  models:
    - name: $GW_MODEL
      deployments:
        - {url: "$FIXTURE_URL/v1", model: $FIXTURE_MODEL}
EOF
"$MODEL_GW_BIN" --config "$DIR/triplane.yaml" 2>"$DIR/model-gw.err" &
GW_PID=$!
gw_listening() { gwctl --json status | jq -e '.[0].ok and (.[0].result.listen | length > 0)'; }
wait_until 20 "$GW_PID" model-gw gw_listening
GW_URL=$(gwctl --json status | jq -r '.[0].result.listen[0]')

# A principal allowed to chat with the model, with a rate limit and a budget far above what the
# run uses, so every request is authenticated, authorised, counted against rpm and tpm,
# reserves and settles tokens against the budget, and writes a usage row.
cat >"$DIR/policy.yaml" <<EOF
teams: [{id: bench, description: model-gw benchmark}]
principals:
  - {id: bench-user, kind: user, team: bench}
rules:
  - {id: bench-chat, effect: allow, subjects: {principals: [bench-user]}, plane: model, resources: [$GW_MODEL], actions: [chat]}
limits:
  - {principal: bench-user, rpm: 1000000000, tpm: 1000000000000}
budgets:
  - {team: bench, period: day, tokens: 1000000000000000}
EOF
gwctl apply -f "$DIR/policy.yaml" >/dev/null || die "gwctl apply failed"
KEY=$(gwctl --json key create --principal bench-user --name bench | jq -r .key) || die "gwctl key create failed"
[[ $KEY == tp_* ]] || die "gwctl key create gave no key"

# 3. nginx, in the foreground, from DIR
mkdir -p "$DIR/nginx/tmp"
start_nginx() {
    local port=$1 d=$DIR/nginx
    cat >"$d/nginx.conf" <<EOF
worker_processes auto;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/client_body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    upstream fixture {
        server 127.0.0.1:$FIXTURE_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://fixture;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    "$NGINX_BIN" -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" -g 'daemon off;' 2>>"$d/stderr" &
    NGINX_PID=$!
}
nginx_up() { curl -sf --max-time 1 "$NGINX_URL/health"; }
for attempt in 1 2 3 4 5; do
    NGINX_PORT=$(pick_port)
    NGINX_URL=http://127.0.0.1:$NGINX_PORT
    start_nginx "$NGINX_PORT"
    for ((i = 0; i < 100; i++)); do
        nginx_up >/dev/null 2>&1 && break
        kill -0 "$NGINX_PID" 2>/dev/null || break
        sleep 0.1
    done
    nginx_up >/dev/null 2>&1 && break
    stop_pid "$NGINX_PID"
    NGINX_PID=
    ((attempt < 5)) || { cat "$DIR/nginx/error.log" "$DIR/nginx/stderr" >&2 2>/dev/null; die "nginx did not start"; }
done

# ---- sanity: each target answers a whole and a streamed chat correctly ----

chat_body() { printf '{"model":"%s","stream":%s,"messages":[{"role":"user","content":"%s"}]}' "$1" "$2" "$PROMPT"; }
check_target() { # NAME URL MODEL
    local name=$1 url=$2/v1/chat/completions model=$3 code events
    code=$(curl -sS --max-time 5 -o "$DIR/check.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $KEY" -d "$(chat_body "$model" false)" "$url") || die "$name: curl failed"
    if [[ $code != 200 ]] || ! jq -e --arg p "Fixture reply to: $PROMPT" '.choices[0].message.content == $p' \
        "$DIR/check.json" >/dev/null; then
        die "$name: bad chat answer ($code): $(head -c 500 "$DIR/check.json")"
    fi
    code=$(curl -sSN --max-time 5 -o "$DIR/check.sse" -w '%{http_code}' -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $KEY" -d "$(chat_body "$model" true)" "$url") || die "$name: curl (stream) failed"
    events=$(grep -c '^data: ' "$DIR/check.sse" || true)
    [[ $code == 200 && $events == 13 && $(grep '^data: ' "$DIR/check.sse" | tail -1) == 'data: [DONE]' ]] ||
        die "$name: bad stream ($code, $events events): $(head -c 500 "$DIR/check.sse")"
}
check_target "fixture" "$FIXTURE_URL" "$FIXTURE_MODEL"
check_target "nginx" "$NGINX_URL" "$FIXTURE_MODEL"
check_target "model-gw" "$GW_URL" "$GW_MODEL"

# ---- the runs ----

scrape() { curl -sf --max-time 5 "$GW_URL/metrics" >"$1" || die "GET $GW_URL/metrics failed"; }

# overhead_hist FILE: "le cumulative" lines, then "sum S" and "count N", of the model's histogram.
overhead_hist() {
    awk -v m="$GW_MODEL" '
        index($0, "triplane_model_gateway_overhead_seconds_bucket{model=\"" m "\",le=\"") == 1 {
            le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le); print le, $2 }
        index($0, "triplane_model_gateway_overhead_seconds_sum{model=\"" m "\"}") == 1 { print "sum", $2 }
        index($0, "triplane_model_gateway_overhead_seconds_count{model=\"" m "\"}") == 1 { print "count", $2 }
    ' "$1"
}
# overhead_summary AFTER [BEFORE]: count, sum, mean and the buckets holding p50 and p99 of the
# observations made between the two scrapes.
overhead_summary() {
    awk '
        function fmt(x) { return x == "+Inf" ? "+Inf" : sprintf("%g ms", x * 1000) }
        function where(q,   i, prev) {
            prev = "0"
            for (i = 1; i <= n; i++) { if (cum[i] >= q * count) return "(" fmt(prev) ", " fmt(les[i]) "]"; prev = les[i] }
            return "?"
        }
        FILENAME == ARGV[1] { before[$1] = $2; next }
        { v = $2 - ($1 in before ? before[$1] : 0)
          if ($1 == "sum") sum = v; else if ($1 == "count") count = v; else { les[++n] = $1; cum[n] = v } }
        END {
            if (count <= 0) { print "no observations"; exit }
            printf "count %d, sum %.3f s, mean %.1f us; p50 in %s, p99 in %s\n", count, sum, sum / count * 1e6, where(0.5), where(0.99)
        }
    ' "${2:-/dev/null}" "$1"
}

# CPU time (user + system, all threads, in clock ticks) used so far by the processes of a target:
# the fixture, nginx (master and workers) or model-gw.
target_pids() {
    case $1 in
    fixture) echo "$FIXTURE_PID" ;;
    nginx) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" 2>/dev/null) ;;
    model-gw) echo "$GW_PID" ;;
    esac
}
cpu_ticks() { # PID...: utime + stime summed (fields 14 and 15 of /proc/PID/stat, after the command name)
    local pid total=0 f
    for pid in "$@"; do
        read -ra f < <(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
TICKS_PER_S=$(getconf CLK_TCK)

declare -A RPS P50 P99 NON2XX SOCKERR OVERHEAD CPU REQS
run_wrk() { # WORKLOAD TARGET URL MODEL SCRIPT THREADS CONNECTIONS
    local workload=$1 target=$2 url=$3 model=$4 script=$5 threads=$6 conns=$7 line ticks
    local -a pids
    echo "  $workload -> $target (wrk -t$threads -c$conns -d${DURATION}s)" >&2
    [[ $target != model-gw ]] || { scrape "$DIR/m.before"; overhead_hist "$DIR/m.before" >"$DIR/h.before"; }
    read -ra pids <<<"$(target_pids "$target")"
    ticks=$(cpu_ticks "${pids[@]}")
    # In the background, so that a signal to this script is handled at once (bash runs traps
    # only after a foreground child ends); cleanup stops it.
    BENCH_MODEL=$model BENCH_KEY=$KEY timeout $((DURATION + 60)) \
        wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 5s -s "$script" "$url/v1/chat/completions" \
        >"$DIR/wrk.out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || { cat "$DIR/wrk.out" >&2; die "wrk failed ($workload, $target)"; }
    WRK_PID=''
    ticks=$(($(cpu_ticks "${pids[@]}") - ticks))
    line=$(grep '^RESULT ' "$DIR/wrk.out") || { cat "$DIR/wrk.out" >&2; die "no result from wrk"; }
    line=${line#RESULT }
    local k=$workload/$target kv
    for kv in $line; do
        case ${kv%%=*} in
        rps) RPS[$k]=${kv#*=} ;;
        p50_us) P50[$k]=${kv#*=} ;;
        p99_us) P99[$k]=${kv#*=} ;;
        non2xx) NON2XX[$k]=${kv#*=} ;;
        requests) REQS[$k]=${kv#*=} ;;
        socket_errors) SOCKERR[$k]=${kv#*=} ;;
        esac
    done
    # The target's own CPU time per request (its processes only, not wrk's): what a request costs
    # it, whatever else competes for the cores.
    CPU[$k]=$(awk -v t="$ticks" -v hz="$TICKS_PER_S" -v n="${REQS[$k]}" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
    if [[ $target == model-gw ]]; then
        scrape "$DIR/m.after"
        overhead_hist "$DIR/m.after" >"$DIR/h.after"
        OVERHEAD[$workload]=$(overhead_summary "$DIR/h.after" "$DIR/h.before")
    fi
}

WORKLOADS=(chat stream chat-c1)
TARGETS=(fixture nginx model-gw)
declare -A URL=([fixture]=$FIXTURE_URL [nginx]=$NGINX_URL [model-gw]=$GW_URL)
declare -A MODEL=([fixture]=$FIXTURE_MODEL [nginx]=$FIXTURE_MODEL [model-gw]=$GW_MODEL)
declare -A LABEL=([fixture]="fixture direct" [nginx]="nginx -> fixture" [model-gw]="model-gw -> fixture")

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "model-gw benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: nproc $(nproc), CPU '$cpu_model', kernel $(uname -r)"
src=$(jq -r '.directories.source // empty' "$BUILD/meson-info/meson-info.json" 2>/dev/null || true)
rev=$(git -C "${src:-$ROOT}" rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
[[ -z $(git -C "${src:-$ROOT}" status --porcelain --untracked-files=no 2>/dev/null) ]] || rev="$rev with uncommitted changes"
echo "build: $BUILD, from ${src:-?} ($rev)"
echo "tools: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), model-gw $(gwctl --json status | jq -r '.[0].result.version')"
echo "setup: fixture --workers $FIXTURE_WORKERS; nginx worker_processes auto ($(nproc)); model-gw workers $GW_WORKERS;" \
    "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s (chat, stream) and -t1 -c1 (chat-c1)"
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (anything else busy on the machine skews the numbers)"
echo "running $((${#WORKLOADS[@]} * ${#TARGETS[@]})) runs of ${DURATION} s:" >&2
for w in "${WORKLOADS[@]}"; do
    case $w in
    chat) script=$CHAT_LUA threads=$THREADS conns=$CONNECTIONS ;;
    stream) script=$STREAM_LUA threads=$THREADS conns=$CONNECTIONS ;;
    chat-c1) script=$CHAT_LUA threads=1 conns=1 ;;
    esac
    for t in "${TARGETS[@]}"; do
        run_wrk "$w" "$t" "${URL[$t]}" "${MODEL[$t]}" "$script" "$threads" "$conns"
    done
done

# ---- report ----

ms() { awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }'; }
echo
printf '%-8s %-20s %10s %9s %9s %8s %8s %11s\n' workload target "req/s" "p50 ms" "p99 ms" non-2xx sockerr "cpu us/req"
for w in "${WORKLOADS[@]}"; do
    for t in "${TARGETS[@]}"; do
        k=$w/$t
        printf '%-8s %-20s %10.0f %9s %9s %8s %8s %11s\n' "$w" "${LABEL[$t]}" "${RPS[$k]}" "$(ms "${P50[$k]}")" \
            "$(ms "${P99[$k]}")" "${NON2XX[$k]}" "${SOCKERR[$k]}" "${CPU[$k]}"
    done
    awk -v w="$w" -v gr="${RPS[$w/model-gw]}" -v nr="${RPS[$w/nginx]}" -v g99="${P99[$w/model-gw]}" \
        -v n99="${P99[$w/nginx]}" -v d99="${P99[$w/fixture]}" -v gc="${CPU[$w/model-gw]}" -v nc="${CPU[$w/nginx]}" 'BEGIN {
        printf "%-8s model-gw/nginx: throughput %.2fx, p99 %.2fx, cpu per request %.2fx; p99 added over direct: nginx %+.3f ms, model-gw %+.3f ms\n",
            w, gr / nr, g99 / n99, (nc > 0 ? gc / nc : 0), (n99 - d99) / 1000, (g99 - d99) / 1000 }'
done

echo
echo "model-gw triplane_model_gateway_overhead_seconds (time not spent waiting on the upstream):"
for w in "${WORKLOADS[@]}"; do
    printf '  %-8s %s\n' "$w" "${OVERHEAD[$w]}"
done
scrape "$DIR/m.final"
overhead_hist "$DIR/m.final" >"$DIR/h.final"
printf '  %-8s %s\n' "all" "$(overhead_summary "$DIR/h.final")"
echo "  buckets (cumulative, whole run): $(awk '$1 != "sum" && $1 != "count" { printf "%sle=%s:%s", sep, $1, $2; sep = " " }' "$DIR/h.final")"

# ---- anomalies: anything but 200s, upstream errors, a dead daemon, lost usage records ----

echo
echo "model-gw checks:"
kill -0 "$GW_PID" 2>/dev/null && echo "  model-gw still running (pid $GW_PID)" || echo "  ANOMALY: model-gw is not running"
grep -E '^triplane_model_(requests_total|upstream_errors_total|retries_total|repairs_total)\{' "$DIR/m.final" |
    sed 's/^/  /' || true
grep -E '^triplane_http_requests_total\{' "$DIR/m.final" | grep -v 'status="200"' | sed 's/^/  ANOMALY: /' || true
grep -E '^triplane_store_(records_total|queue_depth)' "$DIR/m.final" | sed 's/^/  /' || true
usage=$(gwctl --json usage --by model --since -1h 2>/dev/null | jq -c '.rows' 2>/dev/null || echo '?')
echo "  usage rows by model (gwctl usage --by model): $usage"
if [[ -s $DIR/model-gw.err ]]; then
    echo "  model-gw stderr ($(wc -l <"$DIR/model-gw.err") lines at level warn and above), last 5:"
    tail -5 "$DIR/model-gw.err" | cut -c1-300 | sed 's/^/    /'
else
    echo "  model-gw stderr: empty (no warnings or errors)"
fi
[[ ! -s $DIR/fixture.err ]] || { echo "  fixture stderr, last 5:"; tail -5 "$DIR/fixture.err" | sed 's/^/    /'; }
[[ ! -s $DIR/nginx/error.log ]] || { echo "  nginx error.log, last 5:"; tail -5 "$DIR/nginx/error.log" | sed 's/^/    /'; }
