#!/usr/bin/env bash
# `make bench`: brings the local pipeline up (idempotent) and measures it with bench/'s load generator.
# Prints JSON and a table, and writes .run/bench.json. Arguments go to the load generator (--help).
set -euo pipefail
cd "$(dirname "$0")/.."

hack/up.sh >/dev/null
# shellcheck source=/dev/null
. .run/env
cargo build --release --locked -q -p analytics-bench
PG_ADMIN_URL=$(cat .run/postgres/url) \
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1) \
CONSUMER_METRICS_URL="http://127.0.0.1:${CONSUMER_PORT:-8082}/metrics" \
  exec target/release/loadgen "$@"
