#!/usr/bin/env bash
# The whole test suite: the README's test command, and what .ci/run calls.
#
# The suite needs more than cargo (a browser, npm packages, Python tools for
# the deploy checks, redis-server): this script installs whatever is missing
# first, then runs every part. Nothing is skipped when a program is absent:
# it is installed, or the run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser test (tests/it/graphiql.rs) drives Debian's Chromium with
# playwright-core from npm; no browser is ever downloaded from elsewhere.
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (Debian package) for the browser test"
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y chromium
fi
# The multi-replica tests (tests/it/gateway_redis.rs) start their own
# redis-server on a free loopback port (no persistence, killed when done).
if ! command -v redis-server >/dev/null; then
  echo "== installing redis-server (Debian package) for the multi-replica tests"
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y redis-server
fi
command -v node >/dev/null || { echo "error: node (20+) and npm are needed for tests/browser" >&2; exit 1; }
# npm ci when node_modules is missing or older than the lock file (npm writes
# node_modules/.package-lock.json on every install).
if [ ! -f tests/browser/node_modules/.package-lock.json ] ||
   [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  echo "== npm ci in tests/browser (playwright-core, pinned)"
  (cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund)
fi
# The graphql-ws reference client (tests/ws), run by tests/it/gateway_live.rs:
# installed from its lock file when missing or older than the lock file
# (npm writes node_modules/.package-lock.json on every install).
if [ ! -f tests/ws/node_modules/.package-lock.json ] \
    || [ tests/ws/package-lock.json -nt tests/ws/node_modules/.package-lock.json ]; then
    echo "== npm ci (tests/ws)"
    (cd tests/ws && npm ci --no-audit --no-fund)
fi

echo "== cargo test --workspace --locked"
cargo test --workspace --locked
bash deploy/check.sh   # Dockerfile, Helm chart, IAM, schema evolution (deploy/README.md)
