#!/usr/bin/env bash
# `make bench`: brings the local pipeline up (idempotent) and measures it. Prints JSON and a table, and
# writes .run/bench.json. Arguments go to `loadgen measure`, e.g. `--json FILE`; the phase length and
# the clients come from the environment:
#
#   BENCH_DURATION  seconds per measured phase, pgbench's included (default 15)
#   BENCH_CLIENTS   concurrent clients, pgbench's included (default 32)
#   BENCH_DRAIN_EVENTS  orders pre-filled for the drain phase (default 40000)
#
# Phases: the PostgreSQL ceiling of the order transaction (pgbench on a scratch copy of the write schema);
# the drain (the consumer is stopped, the queue pre-filled, the consumer restarted); then loadgen's
# burst, sustained, freshness and query phases over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-15}
clients=${BENCH_CLIENTS:-32}
drain_events=${BENCH_DRAIN_EVENTS:-40000}

hack/up.sh >/dev/null
# shellcheck source=/dev/null
. .run/env
cargo build --release --locked -q -p analytics-bench
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
admin=$(cat .run/postgres/url)
export CONSUMER_METRICS_URL="http://127.0.0.1:${CONSUMER_PORT:-8082}/metrics"
loadgen() { target/release/loadgen --clients "$clients" "$@"; }

echo "ceiling: pgbench, $clients clients, ${duration}s..." >&2
scratch=analytics_bench_ceiling
PGOPTIONS="-c client_min_messages=warning" "$pg_bin/psql" -q -v ON_ERROR_STOP=1 "$admin/postgres" \
  -c "drop database if exists $scratch" -c "create database $scratch"
WRITE_DATABASE_URL="$admin/$scratch" target/release/command-service migrate >/dev/null
"$pg_bin/psql" -q -v ON_ERROR_STOP=1 "$admin/$scratch" -c "
  insert into products (name, category, price, stock)
  select 'Bench product ' || i, 'Category ' || (i % 20), 10.00, 1000000000 from generate_series(1, 500) as i"
pgbench_out=$("$pg_bin/pgbench" -n -M prepared -c "$clients" -j 2 -T "$duration" -f bench/order.sql "$admin/$scratch")
"$pg_bin/psql" -q "$admin/postgres" -c "drop database if exists $scratch"
ceiling=$(awk '/^tps = / { print $3; exit }' <<<"$pgbench_out")
[ -n "$ceiling" ] || { echo "bench: no tps in pgbench's output:" >&2; echo "$pgbench_out" >&2; exit 1; }

echo "drain: $drain_events events..." >&2
consumer=$(cat .run/consumer.pid)
kill -TERM "$consumer"
# Whatever happens from here, the consumer runs again afterwards (up.sh starts only what is down).
trap 'hack/up.sh >/dev/null' EXIT
while kill -0 "$consumer" 2>/dev/null; do sleep 0.05; done
loadgen fill --events "$drain_events"
hack/up.sh >/dev/null # starts the consumer again, and only it
drain=$(loadgen drain --events "$drain_events")

loadgen measure --ceiling-tps "$ceiling" --drain-events-per-s "$drain" --duration "${duration}s" "$@"
