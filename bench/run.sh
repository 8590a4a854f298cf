#!/usr/bin/env bash
# The benchmark harness: builds release, starts the demo, drives it over
# loopback HTTP, and writes the figures to BENCHMARKS.md (machine, command,
# results, all from this one run).
#
#   bench/run.sh                  # full run, about 9 minutes after the build
#   BENCH_SECS=5 ROUNDS=1 POLL_SECS=20 CALLGRIND_REQS=100 bench/run.sh   # a quicker look
#   SKIP_CALLGRIND=1 bench/run.sh # wrk rows only
#   BENCH_BIN=path/to/ssm-session-gateway bench/run.sh   # another build, not rebuilt
#   ONLY_CALLGRIND=1 bench/run.sh # instructions per request only (quiet machine not needed)
#   BENCH_ROWS="hit cursor-miss" bench/run.sh   # some rows only
#
# Three demo processes, one after the other, each on free loopback ports
# (BENCH_PORT pins the gateway's; the run stops, saying so, when it is taken):
#
# 1. Throughput (wrk, no upstream latency, the page cache warm): the same
#    36 KB page of sessions as prebuilt bytes from a plain axum route, as a
#    response-cache hit, and as response-cache misses: a distinct document per
#    request (an alias that changes), a distinct `after` cursor per request
#    with one document, and the same through automatic persisted queries.
#    Then two yardsticks: the prebuilt bytes after 50 and 100 us of busy CPU
#    (`/_bench/spin/{us}`), the rates wrk on the same cores leaves routes
#    that cost that much. Every row runs once in each of ROUNDS rounds, and
#    each ratio to prebuilt is taken within its round.
# 2. Instructions per request of the same rows, under valgrind's callgrind,
#    for CALLGRIND_REQS requests each from a one-connection client
#    (bench/client.py), so the figure is repeatable where wall-clock rates
#    are not (shared cores; `perf stat` has no counters on these VMs).
#    Every miss there uses a cursor no request used before.
# 3. Latency and polling with LATENCY_MS of upstream latency: cold vs warm,
#    and 100 clients polling one view.
#
# Every request goes to 127.0.0.1 only, bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_SECS=${BENCH_SECS:-10}       # each throughput row, each round
ROUNDS=${ROUNDS:-3}                # throughput rounds, every row once in each
POLL_SECS=${POLL_SECS:-60}         # the 100-client polling run
LATENCY_MS=${LATENCY_MS:-50}       # added upstream latency (part 3)
CALLGRIND_REQS=${CALLGRIND_REQS:-200}
OUT=${OUT:-BENCHMARKS.md}
BENCH_DIR=target/bench             # callgrind dumps are kept here for callgrind_annotate

apt_install() { # package...
  echo "== installing $* (Debian packages)"
  (apt-get update -qq && apt-get install -y -qq "$@") >/dev/null ||
    { echo "error: could not install $*; install it and run again" >&2; exit 1; }
}
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || apt_install python3
if [ -z "${SKIP_CALLGRIND:-}" ]; then
  command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || apt_install valgrind
fi

if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$BENCH_BIN                   # another build (a baseline kept aside)
else
  echo "== cargo build --release"
  cargo build --release --locked 2>&1 | tail -1
  BIN=target/release/ssm-session-gateway
fi
CLIENT="python3 bench/client.py"
KEY=demo-admin                     # the demo's admin key: every account
mkdir -p "$BENCH_DIR"

WORK=$(mktemp -d)
PID= CG_PID=
stop_demo() {
  # Debian's valgrind is a shell script: its tool process is CG_PID.
  if [ -n "$CG_PID" ]; then kill "$CG_PID" 2>/dev/null || true; CG_PID=; fi
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi
}
cleanup() { stop_demo; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_taken() {
  python3 -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: sys.exit(0)
sys.exit(1)' "$1"
}

# start_demo NAME WAIT_SECS [wrapper...] -- [demo flags...]: sets GW, EMU, PID.
start_demo() {
  local name=$1 wait=$2; shift 2
  local wrapper=()
  while [ "$1" != "--" ]; do wrapper+=("$1"); shift; done; shift
  local port=${BENCH_PORT:-$(free_port)}
  if port_taken "$port"; then
    echo "error: port $port on 127.0.0.1 is taken; free it, set BENCH_PORT to a free port, or unset BENCH_PORT to pick one" >&2
    exit 1
  fi
  GW=127.0.0.1:$port
  EMU=127.0.0.1:$(free_port)
  "${wrapper[@]}" "$BIN" demo --listen "$GW" --emulator-listen "$EMU" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID=$!
  for _ in $(seq $((wait * 10))); do
    curl -sf "http://$GW/healthz" >/dev/null && return 0
    if ! kill -0 "$PID" 2>/dev/null; then
      echo "error: the $name demo exited; its stderr:" >&2; tail -20 "$WORK/$name.err" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "error: the $name demo did not answer /healthz on $GW within ${wait}s" >&2; exit 1
}

# The warm query: sessions(first: 50) with every scalar field (bench/client.py
# holds the same documents).
FIELDS='id sessionId target status startDate endDate documentName owner ownerName reason details maxSessionDuration accessType durationSeconds region'
SELECTION="edges { cursor node { $FIELDS } } pageInfo { hasNextPage endCursor }"
QUERY="{ sessions(state: HISTORY, first: 50) { $SELECTION } }"
PAGE_QUERY="query Page(\$after: String) { sessions(state: HISTORY, first: 50, after: \$after) { $SELECTION } }"
PAGE_HASH=$(printf '%s' "$PAGE_QUERY" | sha256sum | cut -d' ' -f1)
BODY=$(printf '{"query":"%s"}' "$QUERY")
printf '%s' "$BODY" >"$WORK/body.json"
AUTH="Authorization: Bearer $KEY"
post() { curl -s -o "$2" -w '%{time_total}' "http://$GW$1" -H 'content-type: application/json' -H "$AUTH" --data-binary @"$3"; }

# Warms the page and response caches and stores the prebuilt bytes.
warm() {
  post /graphql "$WORK/response.json" "$WORK/body.json" >/dev/null
  post /graphql "$WORK/response.json" "$WORK/body.json" >/dev/null
  BYTES=$(wc -c <"$WORK/response.json")
  curl -sf -X PUT "http://$GW/_bench/prebuilt" --data-binary @"$WORK/response.json" >/dev/null
}

# wrk scripts, one per row. The misses keep every request a response-cache
# miss: a new alias each time; or a cursor from the collected pool (every
# History edge of the demo with 50 sessions after it), in turn, plus a
# variable `n` the document does not use, new each time, so that a cursor's
# second turn is not a hit either (the gateway does the same work as for an
# unseen cursor; the callgrind rows use each cursor once, with no `n`).
# Each miss request is built once, split at a 10-digit counter, and each
# request is then two concatenations: formatting every body and its headers
# in Lua cost wrk about 2 µs more a request (against the prebuilt route),
# CPU taken from the gateway's cores that the static rows (prebuilt, hit,
# yardsticks) do not spend. Some remains: wrk's CPU column shows it.
lua_common() { # method
  cat <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $KEY"
local threads, id = {}, 0
function setup(thread) id = id + 1; thread:set("tid", id) end
LUA
}
# What a miss row's script adds: its requests come from its build(), a list
# of requests each split at its counter, taken in turn.
lua_counted() {
  cat <<'LUA'
-- The request for body, split where "##########" holds the counter.
local function split(body)
  local req = wrk.format(nil, nil, nil, body)
  local at = req:find("##########", 1, true)
  return { req:sub(1, at - 1), req:sub(at + 10) }
end
local parts, n, i
function request()
  if not parts then parts, n, i = build(), 0, 0 end
  n = n + 1
  i = i % #parts + 1
  return parts[i][1] .. string.format("%010d", n) .. parts[i][2]
end
LUA
}
write_lua() {
  { lua_common; echo "wrk.body = [[$BODY]]"; } >"$WORK/same.lua"
  { lua_common; lua_counted; cat <<LUA
local sel = [[$SELECTION]]
function build()
  return { split(string.format('{"query":"{ t%s_##########: sessions(state: HISTORY, first: 50) { %s } }"}', tid, sel)) }
end
LUA
  } >"$WORK/doc-miss.lua"
  for row in cursor-miss apq-miss; do
    { lua_common; lua_counted; cat <<LUA
local query = [[$PAGE_QUERY]]
local hash = "$PAGE_HASH"
function build()
  local built = {}
  for cursor in io.lines("$WORK/cursors.txt") do
    local vars = string.format('"variables":{"after":"%s","n":"%s_##########"}', cursor, tid)
    if "$row" == "apq-miss" then
      built[#built + 1] = split(string.format('{%s,"extensions":{"persistedQuery":{"version":1,"sha256Hash":"%s"}}}', vars, hash))
    else
      built[#built + 1] = split(string.format('{"query":"%s",%s}', query, vars))
    end
  end
  return built
end
LUA
    } >"$WORK/$row.lua"
  done
}

# The gateway's CPU time (user and system) so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# -> "rps p50 p99 cpu_us_per_request wrk_cpu_us_per_request"
run_wrk() { # url connections seconds script
  local before after TIMEFORMAT='%U %S'
  before=$(cpu_ticks)
  # wrk's own CPU (bash's time keyword): what the client takes from the cores.
  { time wrk -t2 -c"$2" -d"$3"s --latency -s "$4" "$1" >"$WORK/wrk.txt" 2>"$WORK/wrk.err"; } 2>"$WORK/wrk.time" ||
    { echo "error: wrk failed on $4:" >&2; cat "$WORK/wrk.err" >&2; exit 1; }
  [ -s "$WORK/wrk.err" ] && { echo "wrk on $4 said:" >&2; cat "$WORK/wrk.err" >&2; }
  after=$(cpu_ticks)
  local rps p50 p99 cpu wrk_cpu n
  n=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
  cpu=$(awk -v t=$((after - before)) -v us="$TICK_US" -v n="$n" \
    'BEGIN { if (n > 0) printf "%.0f", t * us / n; else print "-" }')
  wrk_cpu=$(awk -v n="$n" '{ if (n > 0) printf "%.0f", ($1 + $2) * 1e6 / n; else print "-" }' "$WORK/wrk.time")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")
  if grep -q 'Non-2xx' "$WORK/wrk.txt"; then
    echo "warning: $(grep 'Non-2xx' "$WORK/wrk.txt" | xargs) in $4" >&2
  fi
  echo "$rps $p50 $p99 $cpu $wrk_cpu"
}

# Registers the paging document under its hash (automatic persisted queries).
register_apq() {
  printf '{"query":"%s","extensions":{"persistedQuery":{"version":1,"sha256Hash":"%s"}}}' \
    "$PAGE_QUERY" "$PAGE_HASH" >"$WORK/register.json"
  post /graphql "$WORK/registered.json" "$WORK/register.json" >/dev/null
  if grep -q '"errors"' "$WORK/registered.json"; then
    echo "   (this build does not take persisted queries: no APQ row)"
    local row kept=()
    for row in "${ROWS[@]}"; do [ "$row" = apq-miss ] || kept+=("$row"); done
    ROWS=("${kept[@]}")
  fi
}

read -r -a ROWS <<<"${BENCH_ROWS:-prebuilt hit doc-miss cursor-miss apq-miss spin-50 spin-100}"
declare -A NAME=(
  [prebuilt]="\`/_bench/prebuilt\` (same bytes, plain axum)"
  [hit]="response-cache hit (the same request again)"
  [doc-miss]="miss: a distinct document per request (new alias)"
  [cursor-miss]="miss: a distinct \`after\` cursor per request, one document"
  [apq-miss]="miss: as above, the document sent as its APQ hash"
  [spin-50]="yardstick: \`/_bench/spin/50\`, the same bytes after 50 µs of busy CPU"
  [spin-100]="yardstick: \`/_bench/spin/100\`, the same bytes after 100 µs of busy CPU"
)
declare -A RPS P50 P99 CPU WRK_CPU IR RATIO SPREAD
# The median of its arguments (numbers), as given when there is one.
median_of() {
  printf '%s\n' "$@" | sort -g |
    awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

if [ -z "${ONLY_CALLGRIND:-}" ]; then
echo "== 1. throughput: wrk, 2 threads, 32 connections, ${BENCH_SECS}s per row, $ROUNDS rounds, no upstream latency"
start_demo throughput 30 -- --bench-routes
warm
$CLIENT cursors "http://$GW" "$KEY" 500 "$WORK/cursors.txt"
write_lua
register_apq
# Every row once a round, prebuilt first: each row's ratio is taken to the
# prebuilt rate of its own round, so that the machine speeding up or slowing
# down between rows (it does, by a fifth, on shared cores) moves both sides.
declare -A R_RPS R_P50 R_P99 R_CPU R_WRK
for round in $(seq "$ROUNDS"); do
  for row in "${ROWS[@]}"; do
    case $row in
      prebuilt) url="http://$GW/_bench/prebuilt" script="$WORK/same.lua" ;;
      spin-*) url="http://$GW/_bench/spin/${row#spin-}" script="$WORK/same.lua" ;;
      hit) url="http://$GW/graphql" script="$WORK/same.lua" ;;
      *) url="http://$GW/graphql" script="$WORK/$row.lua" ;;
    esac
    k="$row,$round"
    read -r R_RPS[$k] R_P50[$k] R_P99[$k] R_CPU[$k] R_WRK[$k] < <(run_wrk "$url" 32 "$BENCH_SECS" "$script")
    echo "   round $round, $row: ${R_RPS[$k]} req/s, ${R_CPU[$k]} us of gateway CPU and ${R_WRK[$k]} us of wrk's per request"
  done
done
# Each figure: the median over the rounds; the ratio's spread: its lowest and
# highest round.
for row in "${ROWS[@]}"; do
  rps=() p50=() p99=() cpu=() wrk_cpu=() ratios=()
  for round in $(seq "$ROUNDS"); do
    k="$row,$round"
    rps+=("${R_RPS[$k]}") p50+=("${R_P50[$k]}") p99+=("${R_P99[$k]}") cpu+=("${R_CPU[$k]}") wrk_cpu+=("${R_WRK[$k]}")
    ratios+=("$(awk -v g="${R_RPS[$k]}" -v s="${R_RPS[prebuilt,$round]:-0}" 'BEGIN { if (s > 0) printf "%.3f", g / s; else print "-" }')")
  done
  RPS[$row]=$(median_of "${rps[@]}") P50[$row]=$(median_of "${p50[@]}") P99[$row]=$(median_of "${p99[@]}")
  CPU[$row]=$(median_of "${cpu[@]}") WRK_CPU[$row]=$(median_of "${wrk_cpu[@]}")
  RATIO[$row]=$(median_of "${ratios[@]}")
  SPREAD[$row]=$(printf '%s\n' "${ratios[@]}" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f-%.2f", lo, hi}')
  echo "   $row: median ${RPS[$row]} req/s, ratio ${RATIO[$row]} (rounds ${SPREAD[$row]})"
done
THROUGHPUT_RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
stop_demo
fi

if [ -z "${SKIP_CALLGRIND:-}" ]; then
  echo "== 2. instructions per request: callgrind, ${CALLGRIND_REQS} requests per row, one connection"
  start_demo callgrind 600 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$BENCH_DIR/callgrind.out.%p" -- --bench-routes
  CG_PID=$(callgrind_control 2>/dev/null | awk -v gw="--listen $GW " 'index($0 " ", gw) {sub(":", "", $2); print $2; exit}')
  [ -n "$CG_PID" ] || { echo "error: callgrind_control does not see the demo under valgrind" >&2; exit 1; }
  warm
  # Distinct cursors for each row and its one unmeasured warm-up request:
  # no cursor is ever used twice.
  N=$CALLGRIND_REQS
  $CLIENT cursors "http://$GW" "$KEY" $((2 * N + 2)) "$WORK/cg-cursors.txt"
  sed -n "1p" "$WORK/cg-cursors.txt" >"$WORK/cg-warm-cursor-miss.txt"
  sed -n "2,$((N + 1))p" "$WORK/cg-cursors.txt" >"$WORK/cg-cursor-miss.txt"
  sed -n "$((N + 2))p" "$WORK/cg-cursors.txt" >"$WORK/cg-warm-apq-miss.txt"
  sed -n "$((N + 3)),$((2 * N + 2))p" "$WORK/cg-cursors.txt" >"$WORK/cg-apq-miss.txt"
  register_apq
  callgrind_control -i on "$CG_PID" >/dev/null
  for row in "${ROWS[@]}"; do
    warm_cursors= cursors=
    case $row in
      spin-*) continue ;; # busy by the clock: instructions say nothing
      cursor-miss | apq-miss) warm_cursors="$WORK/cg-warm-$row.txt" cursors="$WORK/cg-$row.txt" ;;
    esac
    # One unmeasured request first: what the first of a kind builds (a
    # cached document, say) is not what each request costs.
    $CLIENT run "http://$GW" "$KEY" "$row" 1 $warm_cursors
    callgrind_control -z "$CG_PID" >/dev/null
    $CLIENT run "http://$GW" "$KEY" "$row" "$N" $cursors
    callgrind_control -d "$row" "$CG_PID" >/dev/null
    dump=$(ls -t "$BENCH_DIR"/callgrind.out."$CG_PID".* | head -1)
    cp "$dump" "$BENCH_DIR/callgrind.$row"
    IR[$row]=$(awk -v n="$CALLGRIND_REQS" '/^(summary|totals):/ {printf "%d", $2 / n; exit}' "$dump")
    echo "   $row: ${IR[$row]} instructions per request"
  done
  stop_demo
  rm -f "$BENCH_DIR"/callgrind.out.*
fi
if [ -n "${ONLY_CALLGRIND:-}" ]; then
  echo "== ONLY_CALLGRIND: instructions only, $OUT left as it is"
  exit 0
fi

echo "== 3. latency: cold vs warm with ${LATENCY_MS} ms upstream latency (20 each)"
# --bench-routes also turns the per-caller rate limit off: 100 pollers as one
# caller would otherwise be refused (429) and counted as served.
start_demo latency 30 -- --bench-routes --upstream-latency-ms "$LATENCY_MS"
COLD=() WARM=()
for i in $(seq 20); do
  # A filter no earlier request used: misses both caches.
  printf '{"query":"{ sessions(state: HISTORY, first: 20, filter: { invokedBefore: \\"2030-01-01T00:00:%02dZ\\" }, accounts: [\\"platform\\"], regions: [\\"us-east-1\\"]) { nodes { sessionId } } }"}' "$i" >"$WORK/cold.json"
  COLD+=("$(post /graphql /dev/null "$WORK/cold.json")")
  WARM+=("$(post /graphql /dev/null "$WORK/cold.json")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)] * 1000}'; }
COLD_MS=$(median "${COLD[@]}"); WARM_MS=$(median "${WARM[@]}")
echo "   cold p50 ${COLD_MS} ms, warm p50 ${WARM_MS} ms"

echo "== 100 clients polling one Active view for ${POLL_SECS}s"
POLL_BODY='{"query":"{ sessions(state: ACTIVE, first: 20) { nodes { sessionId status } pageInfo { hasNextPage } } }"}'
{ lua_common; echo "wrk.body = [[$POLL_BODY]]"; } >"$WORK/poll.lua"
BEFORE=$(curl -sf "http://$EMU/_emulator/stats")
read -r P_RPS _ < <(run_wrk "http://$GW/graphql" 100 "$POLL_SECS" "$WORK/poll.lua")
AFTER=$(curl -sf "http://$EMU/_emulator/stats")
CALLS=$(python3 -c '
import json, sys
def total(s):
    ops = s.get("operations", s.get("calls", {}))
    op = ops.get("DescribeSessions", {})
    return op.get("total", 0) if isinstance(op, dict) else op
b, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(total(a) - total(b))' "$BEFORE" "$AFTER")
REQS=$(awk -v r="$P_RPS" -v s="$POLL_SECS" 'BEGIN { printf "%d", r * s }')
echo "   $REQS requests, $CALLS DescribeSessions calls (6 sources, Active TTL 5 s: about $((POLL_SECS / 5 * 6 + 6)) expected)"
LATENCY_RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
stop_demo
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
# bench/replicas.sh and bench/sockets.py write their own sections, at the
# end: keep them.
REPLICAS=$( [ -f "$OUT" ] && awk '/^## Several replicas/ {keep = 1} keep' "$OUT" || true)
{
  echo "# Benchmarks"
  echo
  echo "Recorded by \`bench/run.sh\` (release build, the demo on loopback, wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'))."
  echo "Every figure below comes from this one run; compare ratios, not lone timings: the machine is shared."
  echo
  echo "- Date: $(date -u +%Y-%m-%d)"
  echo "- Machine: $(nproc) cores ($CPU), $MEM"
  echo "- Command: \`BENCH_SECS=$BENCH_SECS ROUNDS=$ROUNDS POLL_SECS=$POLL_SECS LATENCY_MS=$LATENCY_MS CALLGRIND_REQS=$CALLGRIND_REQS bench/run.sh\`"
  echo "- Demo: 3 accounts × 2 regions, default cache settings"
  echo
  echo "## A page of sessions: hits and misses (${BYTES} bytes)"
  echo
  echo "\`sessions(state: HISTORY, first: 50)\` with every scalar field, the page cache warm, no"
  echo "upstream latency. req/s: wrk, 2 threads, 32 connections, ${BENCH_SECS} s per row, on the same"
  echo "2 cores as the gateway, in $ROUNDS rounds of every row (prebuilt first): each figure is the"
  echo "median over the rounds, and each ratio the median of the rounds' ratios to their own"
  echo "prebuilt rate, with the lowest and highest round's in brackets. Instructions per request: callgrind over the whole process,"
  echo "${CALLGRIND_REQS} requests per row from one keep-alive connection (\`bench/client.py\`);"
  echo "each miss there uses a cursor no request used before. The wrk cursor rows take"
  echo "cursors in turn from all the demo's History edges (500) and add an unused variable"
  echo "that changes per request, so a cursor's second turn misses too."
  echo "Gateway CPU per request: the demo process's user and system time over the"
  echo "row (\`/proc/<pid>/stat\`) divided by the requests wrk completed: steadier than"
  echo "req/s on shared cores, as it leaves out what wrk itself spends; wrk CPU per request is"
  echo "what wrk spent (its user and system time), taken from the same two cores."
  echo "The yardstick rows are plain axum routes that spin before answering the prebuilt"
  echo "bytes: the ratio wrk, on the same 2 cores, leaves a route that costs that much CPU."
  echo
  echo "| row | req/s | ratio to prebuilt | p50 | p99 | gateway CPU / request | wrk CPU / request | instructions / request |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  for row in "${ROWS[@]}"; do
    echo "| ${NAME[$row]} | ${RPS[$row]} | $(awk -v r="${RATIO[$row]}" 'BEGIN { printf "%.2f", r }') (${SPREAD[$row]}) | ${P50[$row]} | ${P99[$row]} | ${CPU[$row]:--} µs | ${WRK_CPU[$row]:--} µs | ${IR[$row]:--} |"
  done
  echo
  echo "## Cold vs warm, ${LATENCY_MS} ms upstream latency"
  echo
  echo "20 queries each missing both caches (a filter no one used before), then each again."
  echo
  echo "| | p50 |"
  echo "| --- | --- |"
  echo "| cold (one upstream call) | ${COLD_MS} ms |"
  echo "| warm (response cache) | ${WARM_MS} ms |"
  echo
  echo "## 100 clients polling one view for ${POLL_SECS} s"
  echo
  echo "\`sessions(state: ACTIVE, first: 20)\` over all 6 sources, Active TTL 5 s, ${LATENCY_MS} ms upstream latency."
  echo
  echo "- Requests served: $REQS ($P_RPS req/s)"
  echo "- \`DescribeSessions\` calls upstream: **$CALLS** (one page per source per TTL would be about $((POLL_SECS / 5 * 6 + 6)))"
  echo
  echo "## Memory"
  echo
  echo "Peak RSS of the demo process (gateway and emulator): **$(mib "$THROUGHPUT_RSS_KB") MiB** after the"
  echo "throughput rows, **$(mib "$LATENCY_RSS_KB") MiB** after the latency and polling runs."
  if [ -n "$REPLICAS" ]; then echo; echo "$REPLICAS"; fi
} >"$OUT"
echo "== wrote $OUT"
