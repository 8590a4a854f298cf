#!/usr/bin/env bash
# The multi-replica benchmark: upstream calls of one polling load over 1, 2
# and 3 gateway replicas, with and without a shared Redis, and the latency of
# a second-level (Redis) hit next to a first-level (memory) hit, from one
# run. The replicas are Application instances in one test process that share
# nothing but the emulator and one redis-server of the run's own (loopback,
# free port, no persistence). Rewrites the "Several replicas" section of
# BENCHMARKS.md.
#
#   bench/replicas.sh        # about 40 s after the build
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-BENCHMARKS.md}

if ! command -v redis-server >/dev/null; then
  echo "== installing redis-server (Debian package)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
fi

SECTION=$(mktemp)
trap 'rm -f "$SECTION"' EXIT
echo "== cargo test --test it bench_replicas -- --ignored"
BENCH_OUT="$SECTION" cargo test --locked --test it bench_replicas -- --ignored --nocapture >/dev/null

{
  echo "## Several replicas (bench/replicas.sh)"
  echo
  echo "Run on $(nproc) cores, $(date -u +%Y-%m-%d), $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/Redis \1/p'), test binary in the dev profile (dependencies at opt-level 1, the gateway unoptimised: latencies are upper bounds; the machine is shared with other builds, so compare the rows of one run, not runs)."
  echo
  cat "$SECTION"
} >"$SECTION.md"
# Replace the section (to the next "## " or the end), or append it.
python3 - "$OUT" "$SECTION.md" <<'PY'
import re, sys
out, section = sys.argv[1], open(sys.argv[2]).read()
text = open(out).read()
pattern = re.compile(r"^## Several replicas.*?(?=^## |\Z)", re.S | re.M)
text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
open(out, "w").write(text)
PY
rm -f "$SECTION.md"
echo "== wrote the section to $OUT"
