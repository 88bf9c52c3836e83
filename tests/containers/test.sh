#!/usr/bin/env bash
# The container test: builds the image from deploy/Dockerfile and runs deploy/compose.yaml (the
# file users run with Docker) under podman and podman-compose, then checks the stack from the
# host over 127.0.0.1:
#   - the image: non-root, a HEALTHCHECK, deploy/config/triplane.yaml valid inside it;
#   - the stack up (three daemons and, from compose.test.yaml, an inference fixture upstream),
#     the time until all three are ready;
#   - gwctl inside the stack: `exec model-gw gwctl` and the admin profile's one-shot `run gwctl`
#     create a principal and a key;
#   - one request per plane with that key: a chat completion through model-gw, MCP initialize +
#     tools/list + tools/call through mcp-gw, /whoami on agent-gw;
#   - the kill switch from the admin profile when gwctl has a kill command (else skipped, and a
#     disable/enable of the principal shows a change reaching all three containers);
#   - state surviving a restart of one container, and the whole stack recreated;
#   - healthchecks, /metrics against the Grafana dashboard, promtool on deploy/prometheus.yml;
#   - memory per container at idle; everything torn down, also on failure.
#
# Usage: tests/containers/test.sh [path/to/inference-fixture]   (default build/tests/fixtures/…)
# Prints TAP ("ok"/"not ok", "# SKIP", "#" notes) and exits non-zero on any failure. Skips as a
# whole, with the reason, only where no container engine can run. On a machine without podman
# it installs podman, podman-compose and debootstrap (as root, or with sudo), sets the two
# settings of /etc/containers/containers.conf that this machine needs, and makes the Debian
# base image with tests/containers/base-image.sh when it cannot be pulled.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
fixture=${1:-$root/build/tests/fixtures/inference-fixture}
image=${TRIPLANE_TEST_IMAGE:-localhost/triplane:test}
project=tpct-$$
start_ms=$(date +%s%3N)

n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; [ $# -gt 1 ] && printf '%s\n' "${@:2}" | sed 's/^/#   /'; return 0; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
note() { echo "# $*"; }
# check NAME COMMAND...: passes when the command succeeds.
check() { local name=$1; shift; if "$@"; then ok "$name"; else not_ok "$name"; fi; }
ms_since() { echo $(( $(date +%s%3N) - $1 )); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }

tmp=$(mktemp -d /tmp/triplane-containers.XXXXXX)
stack_up=false
finish() {
  local rc=$?
  if $stack_up; then teardown >/dev/null 2>&1; fi
  rm -rf "$tmp"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# done_: prints the plan and exits (failures decide the status).
done_() {
  note "took $(secs "$(ms_since "$start_ms")") in all"
  echo "1..$n"
  [ "$failed" -eq 0 ]
  exit $?
}
bail() { not_ok "$@"; if $stack_up; then dump_logs; teardown_checked; fi; done_; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"

# ---- the engine -------------------------------------------------------------------------------

# Installs what is missing (Debian), when we may.
ensure_packages() {
  local missing=() p
  for p in podman podman-compose debootstrap runc curl jq; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || return 1
  note "installing ${missing[*]}"
  $sudo apt-get update -qq >"$tmp/apt.log" 2>&1 &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >>"$tmp/apt.log" 2>&1 \
    || { sed 's/^/#   /' "$tmp/apt.log" | tail -n 15; return 1; }
}

# containers.conf: runtime = "runc" under [engine], the ulimits under [containers].
ensure_setting() {
  local file=/etc/containers/containers.conf section=$1 key=$2 value=$3
  local line="$key = $value"
  $sudo test -f "$file" || { $sudo mkdir -p /etc/containers && echo "" | $sudo tee "$file" >/dev/null; } || return 1
  if $sudo grep -qxF "$line" "$file"; then return 0; fi
  if $sudo grep -qE "^[[:space:]]*$key[[:space:]]*=" "$file"; then
    $sudo sed -i -E "s|^[[:space:]]*$key[[:space:]]*=.*|$line|" "$file"
  elif $sudo grep -qxF "[$section]" "$file"; then
    $sudo sed -i "/^\[$section\]\$/a $line" "$file"
  else
    printf '\n[%s]\n%s\n' "$section" "$line" | $sudo tee -a "$file" >/dev/null
  fi
}

if ! ensure_packages; then
  command -v podman >/dev/null && command -v podman-compose >/dev/null || {
    skip "containers" "no container engine: podman and podman-compose are not installed and cannot be installed here"
    done_
  }
fi
ensure_setting engine runtime '"runc"' && ensure_setting containers default_ulimits '["nofile=4096:4096", "nproc=4096:4096"]' \
  || note "could not check /etc/containers/containers.conf (not root)"
if ! timeout 60 podman info >"$tmp/info.log" 2>&1; then
  skip "containers" "no container engine can run here: podman info: $(tail -n1 "$tmp/info.log")"
  done_
fi
note "podman $(podman version --format '{{.Client.Version}}' 2>/dev/null), $(podman-compose version 2>/dev/null | sed -n 's/^podman-compose\(r\)\{0,1\} version *//p' | head -n1 | sed 's/^/podman-compose /')"

# Remove what an earlier run that was killed left behind (projects tpct-PID whose PID is gone).
for p in $(podman ps -a --format '{{index .Labels "io.podman.compose.project"}}' 2>/dev/null | grep '^tpct-[0-9]*$' | sort -u); do
  kill -0 "${p#tpct-}" 2>/dev/null && continue
  note "removing the leftovers of an earlier run ($p)"
  podman ps -aq --filter "label=io.podman.compose.project=$p" | xargs -r timeout 60 podman rm -f -t 1 >/dev/null 2>&1
  podman volume ls -q --filter "label=io.podman.compose.project=$p" | xargs -r timeout 60 podman volume rm -f >/dev/null 2>&1
  timeout 30 podman network rm -f "${p}_default" >/dev/null 2>&1
done

# ---- the base image ---------------------------------------------------------------------------

if ! podman image exists docker.io/library/debian:bookworm-slim; then
  timeout 30 podman pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1 &&
    timeout 30 podman pull -q docker.io/library/debian:bookworm >/dev/null 2>&1
fi
t=$(date +%s%3N)
if podman image exists docker.io/library/debian:bookworm-slim && podman image exists docker.io/library/debian:bookworm; then
  ok "Debian base images are present"
elif $sudo "$here/base-image.sh" >"$tmp/base.log" 2>&1; then
  ok "Debian base image made with debootstrap ($(secs "$(ms_since "$t")"))"
else
  bail "Debian base image" "$(tail -n 20 "$tmp/base.log")"
fi
if ! timeout 120 podman run --rm --network none docker.io/library/debian:bookworm-slim true >"$tmp/run.log" 2>&1; then
  skip "containers" "no container engine can run here: podman run: $(grep -v '^time=' "$tmp/run.log" | tail -n1)"
  done_
fi

# ---- the image --------------------------------------------------------------------------------

# Compose's own build (the build section of deploy/compose.yaml), in docker format so that the
# image keeps its HEALTHCHECK.
export TRIPLANE_IMAGE=$image
export TRIPLANE_ENV_FILE=$tmp/env
export TRIPLANE_CONFIG_DIR=$here/config
export TRIPLANE_TEST_FIXTURE=$fixture
export BUILDAH_FORMAT=docker
: >"$TRIPLANE_ENV_FILE"
pc=(podman-compose -p "$project" -f "$root/deploy/compose.yaml")
pct=("${pc[@]}" -f "$here/compose.test.yaml")

old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null)
t=$(date +%s%3N)
timeout 1800 "${pc[@]}" build model-gw >"$tmp/build.log" 2>&1
build_ms=$(ms_since "$t")
new_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null)
if tail -n 3 "$tmp/build.log" | grep -q '^exit code: 0$' && [ -n "$new_id" ]; then
  cached=$(grep -c -- '--> Using cache' "$tmp/build.log")
  steps=$(grep -cE '^\[[0-9]+/[0-9]+\] STEP|^STEP ' "$tmp/build.log")
  ok "image built by podman-compose build from deploy/Dockerfile ($(secs "$build_ms"); $cached of $steps steps from the cache)"
else
  bail "image build" "$(grep -vE '^ *"|^ *[]{}[]' "$tmp/build.log" | tail -n 30)"
fi
# Keep one test image (the one this run built replaces the last one) and one compile stage
# (podman keeps each as an untagged image, 10-20 MB apiece).
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then podman rmi "$old_id" >/dev/null 2>&1; fi
podman images -q --filter label=io.triplane.stage=build --sort created | tail -n +2 | xargs -r podman rmi >/dev/null 2>&1
size=$(podman image inspect --format '{{.Size}}' "$image")
note "image $image: $(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }') ($size bytes)"
note "build: $(secs "$build_ms")"

user=$(podman image inspect --format '{{.Config.User}}' "$image")
health=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$image")
check "the image runs as uid 10001, not root ($user)" test "${user%%:*}" = 10001
check "the image has a HEALTHCHECK on /readyz" grep -q triplane-healthcheck <<<"$health"
bad=
for d in model-gw mcp-gw agent-gw; do
  timeout 60 podman run --rm -v "$root/deploy/config:/etc/triplane:ro" "$image" "$d" --check-config >"$tmp/check.log" 2>&1 \
    || bad="$bad $d: $(grep -v '^time=' "$tmp/check.log" | tail -n 3)"
done
if [ -z "$bad" ]; then ok "deploy/config/triplane.yaml is valid in the image (three daemons, --check-config)"; else not_ok "deploy/config/triplane.yaml in the image" "$bad"; fi

# ---- the stack --------------------------------------------------------------------------------

if [ ! -x "$fixture" ] && [ -f "$root/build/build.ninja" ] && [ "$fixture" = "$root/build/tests/fixtures/inference-fixture" ]; then
  ninja -C "$root/build" tests/fixtures/inference-fixture >"$tmp/fixture-build.log" 2>&1
fi
[ -x "$fixture" ] || bail "inference fixture" "no binary at $fixture (build it: ninja -C build tests/fixtures/inference-fixture)"

# Three free ports of 127.0.0.1 for the published ports.
read -r mport cport aport < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
export TRIPLANE_MODEL_GW_PORT=$mport TRIPLANE_MCP_GW_PORT=$cport TRIPLANE_AGENT_GW_PORT=$aport TRIPLANE_BIND=127.0.0.1
model=http://127.0.0.1:$mport mcp=http://127.0.0.1:$cport agent=http://127.0.0.1:$aport
fixture_secret=fixture-secret-$RANDOM$RANDOM
cat >"$TRIPLANE_ENV_FILE" <<EOF
TRIPLANE_LOG_LEVEL=info
FIXTURE_API_KEY=$fixture_secret
EOF
chmod 600 "$TRIPLANE_ENV_FILE"

services=(model-gw mcp-gw agent-gw inference-fixture)
teardown() {
  timeout 180 "${pct[@]}" down -v -t 10 >>"$tmp/compose.log" 2>&1
  podman ps -aq --filter "label=io.podman.compose.project=$project" | xargs -r timeout 60 podman rm -f -t 1
  podman volume ls -q --filter "label=io.podman.compose.project=$project" | xargs -r timeout 60 podman volume rm -f
  timeout 30 podman network rm -f "${project}_default"
  stack_up=false
}
teardown_checked() {
  teardown >/dev/null 2>&1
  local left
  left=$( (podman ps -aq --filter "label=io.podman.compose.project=$project"
           podman volume ls -q --filter "label=io.podman.compose.project=$project"
           podman network ls -q --filter "name=^${project}_") 2>/dev/null | wc -l)
  check "torn down: no container, volume or network of the test is left" test "$left" -eq 0
}
dump_logs() {
  local c
  for c in $(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$project"); do
    echo "# --- $c ($(podman inspect --format '{{.State.Status}}, exit {{.State.ExitCode}}, restarts {{.RestartCount}}' "$c" 2>/dev/null))"
    podman logs --tail 15 "$c" 2>&1 | cut -c1-300 | sed 's/^/#   /'
  done
}
readyz() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1/readyz")" = 200 ]; }
# wait_ready SECONDS URL...: until every URL's /readyz answers 200 (at most SECONDS).
wait_ready() {
  local limit=$1 i u all deadline=$((SECONDS + $1)); shift
  for ((i = 0; i < limit * 5 && SECONDS < deadline; i++)); do
    all=true
    for u in "$@"; do readyz "$u" || { all=false; break; }; done
    $all && return 0
    sleep 0.2
  done
  return 1
}
running_count() {
  podman ps --filter "label=io.podman.compose.project=$project" --filter status=running --format '{{.Names}}' | wc -l
}

# compose_in exec|run ARGS...: podman-compose exec/run with deploy/compose.yaml alone (what a user
# types); prints what the command in the container wrote on stdout and returns its exit status.
# podman-compose 1.0 echoes its podman commands and reports "exit code: N" instead of passing the
# status on; newer versions do neither, and both are handled.
compose_in() {
  local raw=$tmp/compose-in.out rc code
  timeout 120 "${pc[@]}" "$@" >"$raw" 2>"$raw.err"
  rc=$?
  { echo "+ podman-compose $*"; cat "$raw" "$raw.err"; } >>"$tmp/compose.log"
  code=$(sed -n 's/^exit code: \(-\{0,1\}[0-9][0-9]*\)$/\1/p' "$raw" | tail -n 1)
  if grep -qE '^podman (exec|run) ' "$raw"; then
    awk '/^podman (exec|run) /{ buf = ""; on = 1; next } /^exit code: /{ on = 0 } on { buf = buf $0 "\n" } END { printf "%s", buf }' "$raw"
  else
    cat "$raw"
  fi
  [ "$rc" -ne 0 ] && return "$rc"
  return "${code:-0}"
}
gwctl_err() { grep -v '^time=' "$tmp/compose-in.out.err" | tail -n 5; }

t=$(date +%s%3N)
stack_up=true
timeout 300 "${pct[@]}" up -d --no-build "${services[@]}" >>"$tmp/compose.log" 2>&1
if wait_ready 90 "$model" "$mcp" "$agent"; then
  ready_ms=$(ms_since "$t")
  ok "stack up with podman-compose (deploy/compose.yaml + compose.test.yaml): model-gw, mcp-gw, agent-gw ready in $(secs "$ready_ms")"
  note "start to all-ready: $(secs "$ready_ms")"
else
  bail "stack up: every daemon's /readyz answers 200 within 90 s" "running: $(running_count) of ${#services[@]}"
fi
check "four containers running (three daemons and the fixture upstream)" test "$(running_count)" -eq 4
restarts=$(for s in model-gw mcp-gw agent-gw; do podman inspect --format '{{.RestartCount}}' "${project}_${s}_1"; done | awk '{ n += $1 } END { print n + 0 }')
check "no daemon restarted while starting together (restarts: $restarts)" test "$restarts" -eq 0
bound=$(podman ps --filter "label=io.podman.compose.project=$project" --format '{{.Ports}}' | tr ',' '\n' | grep -- '->' | grep -vc '^ *127\.0\.0\.1:')
check "published ports are bound to 127.0.0.1 only" test "$bound" -eq 0

# ---- gwctl inside the stack -------------------------------------------------------------------

status=$(compose_in exec -T model-gw gwctl status)
if [ "$(grep -cE '^(model-gw|mcp-gw|agent-gw) +running' <<<"$status")" -eq 3 ]; then
  ok "compose exec model-gw gwctl status: the three daemons answer on the shared control sockets"
else
  not_ok "compose exec model-gw gwctl status" "$status" "$(gwctl_err)"
fi
if out=$(compose_in run --rm -T --no-deps gwctl apply -f /etc/triplane/policy.yaml); then
  ok "admin profile: compose run --rm gwctl apply creates principal ct-user and its rule"
else
  not_ok "admin profile: compose run --rm gwctl apply" "$out" "$(gwctl_err)"
fi
out=$(compose_in exec -T model-gw gwctl --json key create --principal ct-user --name container-test)
key=$(sed -n 's/.*"key": *"\(tp_[^"]*\)".*/\1/p' <<<"$out")
key_id=$(sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' <<<"$out" | head -n1)
if [ -n "$key" ]; then
  ok "compose exec model-gw gwctl key create: a key for ct-user"
else
  bail "gwctl key create" "$out" "$(gwctl_err)"
fi

# ---- one request per plane, from the host -----------------------------------------------------

auth=(-H "Authorization: Bearer $key")
chat() { # chat: POST a chat completion; prints "STATUS BODY"
  curl -s -m 15 "$@" -H 'content-type: application/json' -o "$tmp/chat.json" -w '%{http_code}' "$model/v1/chat/completions" \
    -d '{"model":"fixture-chat","messages":[{"role":"user","content":"hello from the host"}]}'
}
code=$(chat "${auth[@]}")
reply=$(jq -r '.choices[0].message.content // empty' "$tmp/chat.json" 2>/dev/null)
if [ "$code" = 200 ] && [ "$reply" = "Fixture reply to: hello from the host" ]; then
  ok "model-gw: a chat completion from the host through the gateway to the upstream container"
else
  not_ok "model-gw chat completion" "HTTP $code: $(head -c 300 "$tmp/chat.json")"
fi
check "model-gw: no credential, 401" test "$(chat)" = 401
check "model-gw: the env file reaches the daemons (api_key_env FIXTURE_API_KEY)" \
  test "$(compose_in exec -T model-gw printenv FIXTURE_API_KEY)" = "$fixture_secret"

# mcp_post BODY: POSTs one JSON-RPC message to mcp-gw (in session $sid when set); sets $mcp_code
# and $mcp_msg, the answer (the body, or the last "data:" of an event stream).
sid=
mcp_post() {
  local h=()
  [ -n "$sid" ] && h=(-H "mcp-session-id: $sid" -H "mcp-protocol-version: 2025-06-18")
  mcp_code=$(curl -s -m 15 "${auth[@]}" "${h[@]}" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -D "$tmp/mcp.h" -o "$tmp/mcp.b" -w '%{http_code}' "$mcp/mcp" -d "$1")
  if grep -q '^data:' "$tmp/mcp.b"; then mcp_msg=$(sed -n 's/^data: *//p' "$tmp/mcp.b" | tail -n 1); else mcp_msg=$(cat "$tmp/mcp.b"); fi
}
mcp_post '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"container-test","version":"1.0.0"}}}'
sid=$(sed -n 's/^mcp-session-id: *\([^[:space:]]*\).*/\1/Ip' "$tmp/mcp.h" | tr -d '\r')
if [ "$mcp_code" = 200 ] && [ -n "$sid" ] && [ "$(jq -r '.result.serverInfo.name' <<<"$mcp_msg" 2>/dev/null)" = triplane-mcp-gw ]; then
  ok "mcp-gw: initialize with the key opens a session"
else
  not_ok "mcp-gw initialize" "HTTP $mcp_code: $(head -c 300 <<<"$mcp_msg")"
fi
mcp_post '{"jsonrpc":"2.0","method":"notifications/initialized"}'
check "mcp-gw: notifications/initialized accepted (202)" test "$mcp_code" = 202
mcp_post '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
if [ "$mcp_code" = 200 ] && [ "$(jq -r '[.result.tools[].name] | join(",")' <<<"$mcp_msg" 2>/dev/null)" = echo__echo ]; then
  ok "mcp-gw: tools/list shows the stdio server's tool (echo__echo)"
else
  not_ok "mcp-gw tools/list" "HTTP $mcp_code: $(head -c 300 <<<"$mcp_msg")"
fi
mcp_post '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo__echo","arguments":{"text":"through the gateway"}}}'
if [ "$mcp_code" = 200 ] && [ "$(jq -r '.result.content[0].text' <<<"$mcp_msg" 2>/dev/null)" = "through the gateway" ]; then
  ok "mcp-gw: tools/call reaches the stdio server in the mcp-gw container and answers"
else
  not_ok "mcp-gw tools/call" "HTTP $mcp_code: $(head -c 300 <<<"$mcp_msg")"
fi
sid=
saved_auth=("${auth[@]}")
auth=()
mcp_post '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}'
auth=("${saved_auth[@]}")
check "mcp-gw: no credential, 401" test "$mcp_code" = 401

whoami() { # whoami URL [curl args]: prints "STATUS PRINCIPAL SUSPENDED"
  local u=$1; shift
  local c; c=$(curl -s -m 10 "$@" -o "$tmp/who.json" -w '%{http_code}' "$u/whoami")
  echo "$c $(jq -r '"\(.principal.id // "-") \(.suspended | if . == null then "-" else tostring end)"' "$tmp/who.json" 2>/dev/null)"
}
got=$(whoami "$agent" "${auth[@]}")
check "agent-gw: /whoami with the key is ct-user ($got)" test "$got" = "200 ct-user false"
got=$(whoami "$agent")
check "agent-gw: no credential, 401" test "${got%% *}" = 401
note "agent-gw: /whoami only; A2A messages need an upstream agent (the A2A fixtures are Node, which the image leaves out)"

# ---- kill switch (admin profile) --------------------------------------------------------------

# every_plane EXPECTED: /whoami on the three planes, until each prints EXPECTED (at most 5 s).
every_plane() {
  local want=$1 i u all deadline=$((SECONDS + 5))
  for ((i = 0; i < 25 && SECONDS < deadline; i++)); do
    all=true
    for u in "$model" "$mcp" "$agent"; do [ "$(whoami "$u" "${auth[@]}")" = "$want" ] || { all=false; break; }; done
    $all && return 0
    sleep 0.2
  done
  for u in "$model" "$mcp" "$agent"; do echo "#   $u: $(whoami "$u" "${auth[@]}")"; done
  return 1
}
if compose_in exec -T model-gw gwctl --help | grep -qE '^ +kill '; then
  # The design's syntax: gwctl kill principal|agent|all ... --reason R; gwctl release ...
  # gwctl exits 0 only when every daemon confirmed; the planes are checked either way.
  if out=$(compose_in run --rm -T --no-deps gwctl kill principal ct-user --reason "container test"); then
    ok "admin profile: compose run --rm gwctl kill principal ct-user, confirmed by the three daemons"
  else
    not_ok "admin profile: compose run --rm gwctl kill principal ct-user --reason ... (exit 0, confirmed by all)" "$out" "$(gwctl_err)"
  fi
  check "the kill holds on all three planes (/whoami: suspended)" every_plane "200 ct-user true"
  code=$(chat "${auth[@]}")
  check "model-gw refuses the killed principal's chat completion (403, got $code)" test "$code" = 403
  if out=$(compose_in run --rm -T --no-deps gwctl release principal ct-user); then
    ok "admin profile: compose run --rm gwctl release principal ct-user, confirmed by the three daemons"
  else
    not_ok "admin profile: compose run --rm gwctl release principal ct-user (exit 0, confirmed by all)" "$out" "$(gwctl_err)"
  fi
  check "the release holds on all three planes" every_plane "200 ct-user false"
else
  skip "kill switch from the admin profile (compose run --rm gwctl kill ...)" \
    "gwctl has no kill command yet; the store's kills table is covered by the end-to-end tests"
fi
# A change made from the one-shot container reaches all three planes.
if compose_in run --rm -T --no-deps gwctl principal disable ct-user >/dev/null; then
  check "admin profile: gwctl principal disable takes effect on all three planes (401)" every_plane "401 - -"
else
  not_ok "admin profile: gwctl principal disable" "$(gwctl_err)"
fi
if compose_in run --rm -T --no-deps gwctl principal enable ct-user >/dev/null; then
  check "admin profile: gwctl principal enable restores the key on all three planes" every_plane "200 ct-user false"
else
  not_ok "admin profile: gwctl principal enable" "$(gwctl_err)"
fi

# ---- state survives restarts ------------------------------------------------------------------

pid0=$(podman inspect --format '{{.State.Pid}}' "${project}_model-gw_1" 2>/dev/null)
t=$(date +%s%3N)
timeout 120 "${pc[@]}" restart -t 10 model-gw >>"$tmp/compose.log" 2>&1
sleep 0.5
if wait_ready 60 "$model"; then
  note "model-gw restart to ready: $(secs "$(ms_since "$t")")"
  code=$(chat "${auth[@]}")
  check "after compose restart model-gw: the key still works (chat completion $code)" test "$code" = 200
else
  not_ok "model-gw ready again after compose restart"
fi
pid1=$(podman inspect --format '{{.State.Pid}}' "${project}_model-gw_1" 2>/dev/null)
check "model-gw is a new process after the restart (pid $pid0 -> $pid1)" test "$pid0" != "$pid1"
check "compose exec agent-gw gwctl status sees all three daemons after the restart" \
  test "$(compose_in exec -T agent-gw gwctl status | grep -cE '^(model-gw|mcp-gw|agent-gw) +running')" -eq 3

t=$(date +%s%3N)
timeout 180 "${pct[@]}" down -t 10 >>"$tmp/compose.log" 2>&1
gone=$(running_count)
timeout 300 "${pct[@]}" up -d --no-build "${services[@]}" >>"$tmp/compose.log" 2>&1
if [ "$gone" -eq 0 ] && wait_ready 90 "$model" "$mcp" "$agent"; then
  note "down + up (containers recreated, volumes kept) to all-ready: $(secs "$(ms_since "$t")")"
  code=$(chat "${auth[@]}")
  got=$(whoami "$agent" "${auth[@]}")
  if [ "$code" = 200 ] && [ "$got" = "200 ct-user false" ]; then
    ok "after compose down + up (new containers, same volumes): the key works on model-gw and agent-gw"
  else
    not_ok "state after compose down + up" "chat $code, agent-gw whoami $got"
  fi
  keys=$(compose_in exec -T model-gw gwctl key list --principal ct-user)
  check "gwctl key list still shows the key $key_id" grep -q "$key_id" <<<"$keys"
else
  not_ok "compose down + up: stack ready again (containers left after down: $gone)"
fi

# ---- health, metrics, observability files -----------------------------------------------------

bad=
for s in model-gw mcp-gw agent-gw; do
  timeout 30 podman healthcheck run "${project}_${s}_1" >"$tmp/hc.log" 2>&1 || bad="$bad $s: $(grep -v '^time=' "$tmp/hc.log" | tail -n1)"
done
if [ -z "$bad" ]; then ok "healthchecks of the three containers pass (podman healthcheck run)"; else not_ok "healthchecks" "$bad"; fi

: >"$tmp/metrics.txt"
for u in "$model" "$mcp" "$agent"; do curl -s -m 10 "$u/metrics" >>"$tmp/metrics.txt"; done
check "each daemon's /metrics is reachable (triplane_build_info of model-gw, mcp-gw, agent-gw)" \
  test "$(grep -cE '^triplane_build_info\{daemon="(model-gw|mcp-gw|agent-gw)"' "$tmp/metrics.txt")" -eq 3
exported=$(sed -n 's/^# TYPE \([a-zA-Z_:][a-zA-Z0-9_:]*\) .*/\1/p' "$tmp/metrics.txt" | sort -u)
missing=
for m in $(jq -r '[.. | .expr? // empty] | .[]' "$root/deploy/grafana-dashboard.json" \
           | grep -oE '\b(triplane|process)_[a-z0-9_]+' | sed -E 's/_(bucket|sum|count)$//' | sort -u); do
  grep -qxF "$m" <<<"$exported" || missing="$missing $m"
done
if [ -z "$missing" ]; then
  ok "every metric the Grafana dashboard queries is exported by a daemon"
else
  not_ok "metrics in deploy/grafana-dashboard.json that no daemon exports:$missing"
fi
if command -v promtool >/dev/null; then
  promtool_config() {
    promtool check config "$root/deploy/prometheus.yml" >"$tmp/promtool.log" 2>&1 || { sed 's/^/#   /' "$tmp/promtool.log"; return 1; }
  }
  promtool_queries() {
    { echo 'groups: [{name: dashboard, rules: ['
      jq -r '[.. | .expr? // empty] | .[]' "$root/deploy/grafana-dashboard.json" | sed 's/\$__rate_interval/5m/g; s/\$__range/1h/g' \
        | awk '{ gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); printf "  {record: \"dashboard:expr%d\", expr: \"%s\"},\n", NR, $0 }'
      echo ']}]'; } >"$tmp/dashboard-rules.yml"
    promtool check rules "$tmp/dashboard-rules.yml" >"$tmp/promtool.log" 2>&1 || { sed 's/^/#   /' "$tmp/promtool.log"; return 1; }
  }
  check "promtool check config deploy/prometheus.yml" promtool_config
  check "the dashboard's queries are valid PromQL (promtool check rules)" promtool_queries
else
  skip "promtool checks of deploy/prometheus.yml and the dashboard's queries" "promtool is not installed (Debian package prometheus)"
fi

# ---- memory at idle ---------------------------------------------------------------------------

sleep 2
for s in model-gw mcp-gw agent-gw; do
  mem=$(timeout 30 podman stats --no-stream --format '{{.MemUsage}}' "${project}_${s}_1" 2>/dev/null | cut -d/ -f1 | tr -d ' ')
  rss=$(curl -s -m 5 "$(case $s in model-gw) echo "$model";; mcp-gw) echo "$mcp";; *) echo "$agent";; esac)/metrics" \
        | awk '/^process_resident_memory_bytes /{ printf "%.1f MB", $2 / 1e6 }')
  note "idle memory $s: cgroup ${mem:-?}, resident ${rss:-?}"
done

# ---- teardown ---------------------------------------------------------------------------------

t=$(date +%s%3N)
teardown_checked
note "teardown: $(secs "$(ms_since "$t")")"
done_
