#!/usr/bin/env bash
# The benchmark harness: builds release, starts the demo with a chosen
# upstream latency, drives it over loopback HTTP with wrk, and writes the
# figures to BENCHMARKS.md (machine, command, results).
#
#   bench/run.sh                  # full run, about 2.5 minutes after the build
#   BENCH_SECS=5 POLL_SECS=20 bench/run.sh   # a quicker look
#
# Every request goes to 127.0.0.1 only, bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_SECS=${BENCH_SECS:-10}       # each throughput run
POLL_SECS=${POLL_SECS:-60}         # the 100-client polling run
LATENCY_MS=${LATENCY_MS:-50}       # added upstream latency
GW=127.0.0.1:18080
EMU=127.0.0.1:14566
OUT=${OUT:-BENCHMARKS.md}

if ! command -v wrk >/dev/null; then
  echo "== installing wrk (Debian package)"
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

echo "== cargo build --release"
cargo build --release --locked 2>&1 | tail -1
BIN=target/release/ssm-session-gateway

WORK=$(mktemp -d)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" demo --listen "$GW" --emulator-listen "$EMU" --upstream-latency-ms "$LATENCY_MS" --bench-routes \
  >"$WORK/demo.out" 2>"$WORK/demo.err" &
PID=$!
for _ in $(seq 100); do curl -sf "http://$GW/healthz" >/dev/null && break; sleep 0.1; done

# The warm query: sessions(first: 50) with every scalar field.
FIELDS='id sessionId target status startDate endDate documentName owner ownerName reason details maxSessionDuration accessType durationSeconds region'
QUERY="{ sessions(state: HISTORY, first: 50) { edges { cursor node { $FIELDS } } pageInfo { hasNextPage endCursor } } }"
BODY=$(printf '{"query":"%s"}' "$QUERY")
printf '%s' "$BODY" >"$WORK/body.json"
# The demo's admin key: every account, as the benchmark has always read.
AUTH='Authorization: Bearer demo-admin'
post() { curl -s -o "$2" -w '%{time_total}' "http://$GW$1" -H 'content-type: application/json' -H "$AUTH" --data-binary @"$3"; }

post /graphql "$WORK/response.json" "$WORK/body.json" >/dev/null
post /graphql "$WORK/response.json" "$WORK/body.json" >/dev/null
BYTES=$(wc -c <"$WORK/response.json")
# The same bytes, prebuilt, from a plain axum route of the same binary.
curl -sf -X PUT "http://$GW/_bench/prebuilt" --data-binary @"$WORK/response.json" >/dev/null

cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer demo-admin"
wrk.body = [[$BODY]]
LUA

run_wrk() { # url connections seconds -> "rps p50 p99"
  wrk -t2 -c"$2" -d"$3"s --latency -s "$WORK/post.lua" "$1" >"$WORK/wrk.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")
  echo "$rps $p50 $p99"
}

echo "== warm sessions(first: 50) vs the same bytes prebuilt (${BENCH_SECS}s each, 32 connections)"
read -r G_RPS G_P50 G_P99 < <(run_wrk "http://$GW/graphql" 32 "$BENCH_SECS")
read -r S_RPS S_P50 S_P99 < <(run_wrk "http://$GW/_bench/prebuilt" 32 "$BENCH_SECS")
RATIO=$(awk -v g="$G_RPS" -v s="$S_RPS" 'BEGIN { printf "%.2f", g / s }')
echo "   graphql $G_RPS req/s, prebuilt $S_RPS req/s, ratio $RATIO"

echo "== cold vs warm latency with ${LATENCY_MS} ms upstream latency (20 each)"
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
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer demo-admin"
wrk.body = [[$POLL_BODY]]
LUA
BEFORE=$(curl -sf "http://$EMU/_emulator/stats")
read -r P_RPS _ _ < <(run_wrk "http://$GW/graphql" 100 "$POLL_SECS")
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

RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
RSS_MB=$(awk -v k="$RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')
echo "== peak RSS ${RSS_MB} MiB"

CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
{
  echo "# Benchmarks"
  echo
  echo "Recorded by \`bench/run.sh\` (release build, the demo on loopback, wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'))."
  echo "Figures from one run; compare ratios, not lone timings: the machine is shared."
  echo
  echo "- Date: $(date -u +%Y-%m-%d)"
  echo "- Machine: $(nproc) cores ($CPU), $MEM"
  echo "- Command: \`BENCH_SECS=$BENCH_SECS POLL_SECS=$POLL_SECS LATENCY_MS=$LATENCY_MS bench/run.sh\`"
  echo "- Demo: 3 accounts × 2 regions, upstream latency ${LATENCY_MS} ms per call, default cache settings"
  echo
  echo "## Warm \`sessions(first: 50)\`, every scalar field (${BYTES} bytes)"
  echo
  echo "wrk, 2 threads, 32 connections, ${BENCH_SECS} s each, POST of the same body."
  echo
  echo "| route | req/s | p50 | p99 |"
  echo "| --- | --- | --- | --- |"
  echo "| \`POST /graphql\` (response cache warm) | $G_RPS | $G_P50 | $G_P99 |"
  echo "| \`/_bench/prebuilt\` (same bytes, plain axum) | $S_RPS | $S_P50 | $S_P99 |"
  echo
  echo "Ratio GraphQL / prebuilt: **$RATIO** (target ≥ 0.5)."
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
  echo "\`sessions(state: ACTIVE, first: 20)\` over all 6 sources, Active TTL 5 s."
  echo
  echo "- Requests served: $REQS ($P_RPS req/s)"
  echo "- \`DescribeSessions\` calls upstream: **$CALLS** (one page per source per TTL would be about $((POLL_SECS / 5 * 6 + 6)))"
  echo
  echo "## Memory"
  echo
  echo "Peak RSS of the demo process (gateway and emulator) over the whole run: **${RSS_MB} MiB**."
} >"$OUT"
echo "== wrote $OUT"
