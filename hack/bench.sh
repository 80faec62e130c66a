#!/usr/bin/env bash
# `make bench`: brings the local pipeline up (idempotent) and measures it. Prints JSON and a table, and
# writes .run/bench/bench.json and .run/bench/report.html (plots). Arguments go to `loadgen measure`;
# the phase length and the clients come from the environment:
#
#   BENCH_DURATION        seconds per measured phase, pgbench's included (default 15)
#   BENCH_CLIENTS         concurrent clients of the closed-loop order phases and pgbench (default 32)
#   BENCH_LOOKUP_CLIENTS  concurrent clients of the lookup phase and its pgbench (default 64)
#   BENCH_FRESHNESS_RATE  orders/s offered in the freshness phase (default 1000)
#   BENCH_DRAIN_EVENTS    orders pre-filled for the drain phase (default 40000)
#   BENCH_LARGE_PRODUCTS  products and orders of the large-tables phase (defaults 100000 and 1000000,
#   BENCH_LARGE_ORDERS    each order for a customer of its own; 0 orders skips the phase)
#
# Every run starts from empty databases and queues, so that runs compare: the local pipeline's data is
# dropped.
#
# Phases: PostgreSQL's ceilings for the order transaction, bare and with its outbox row (pgbench running
# bench/order.sql on a scratch copy of the write schema, with PostgreSQL's CPU time per transaction);
# the drain (the consumer is stopped, the queue pre-filled, the consumer restarted); the lookup ceiling
# (pgbench running bench/lookup.sql on the read database); then loadgen's burst, sustained, freshness
# and lookup phases over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-15}
clients=${BENCH_CLIENTS:-32}
lookup_clients=${BENCH_LOOKUP_CLIENTS:-64}
freshness_rate=${BENCH_FRESHNESS_RATE:-1000}
drain_events=${BENCH_DRAIN_EVENTS:-40000}
large_products=${BENCH_LARGE_PRODUCTS:-100000}
large_orders=${BENCH_LARGE_ORDERS:-1000000}

hack/up.sh >/dev/null
echo "bench: starting from empty databases and queues (the local pipeline's data is dropped)" >&2
hack/down.sh --services >/dev/null
PGOPTIONS="-c client_min_messages=warning" psql -q -v ON_ERROR_STOP=1 "$(cat .run/postgres/url)/postgres" \
  -c "drop database if exists analytics_write with (force)" -c "drop database if exists analytics_read with (force)"
for queue in order-events product-events analytics-dead-letter; do
  hack/rabbitmq.sh ctl .run/rabbitmq purge_queue "$queue" >/dev/null 2>&1 || true # absent on a new broker
done
hack/up.sh >/dev/null
# shellcheck source=/dev/null
. .run/env
cargo build --release --locked -q -p analytics-bench
release=${CARGO_TARGET_DIR:-target}/release
mkdir -p .run/bench
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
admin=$(cat .run/postgres/url)
postgres_pid=$(cat .run/postgres.pid)
export CONSUMER_METRICS_URL="http://127.0.0.1:${CONSUMER_PORT:-8082}/metrics"
export POSTGRES_ADMIN_URL="$admin/postgres"
loadgen() { "$release/loadgen" --clients "$clients" "$@"; }

# pgbench DATABASE CLIENTS SCRIPT [ARGS...]: prints "TPS CPU_MS", PostgreSQL's CPU milliseconds per
# transaction taken from its process tree (the backends pgbench used have exited by then, into the
# postmaster's children's time).
pgbench() {
  local database=$1 connections=$2 script=$3 out before after; shift 3
  before=$(loadgen cpu-seconds --pid "$postgres_pid")
  out=$("$pg_bin/pgbench" -n -M prepared -c "$connections" -j 2 -T "$duration" -f "$script" "$@" "$admin/$database")
  after=$(loadgen cpu-seconds --pid "$postgres_pid")
  awk -v before="$before" -v after="$after" '
    /^number of transactions actually processed: / { split($NF, n, "/"); count = n[1] }
    /^tps = / { tps = $3 }
    END { if (!tps || !count) exit 1; printf "%s %.4f\n", tps, (after - before) * 1000 / count }' <<<"$out" ||
    { echo "bench: no tps in pgbench's output:" >&2; echo "$out" >&2; exit 1; }
}

echo "ceilings: pgbench of the order transaction, bare and with its outbox row, $clients clients, ${duration}s each..." >&2
scratch=analytics_bench_ceiling
PGOPTIONS="-c client_min_messages=warning" "$pg_bin/psql" -q -v ON_ERROR_STOP=1 "$admin/postgres" \
  -c "drop database if exists $scratch" -c "create database $scratch"
WRITE_DATABASE_URL="$admin/$scratch" "$release/command-service" migrate >/dev/null
"$pg_bin/psql" -q -v ON_ERROR_STOP=1 "$admin/$scratch" -c "
  insert into products (name, category, price, stock)
  select 'Bench product ' || i, 'Category ' || (i % 20), 10.00, 1000000000 from generate_series(1, 500) as i"
# The bare transaction is bench/order.sql without its outbox statement.
sed '/^insert into outbox/,/now());$/d' bench/order.sql > .run/bench/order-bare.sql
grep -q 'insert into outbox' .run/bench/order-bare.sql && { echo "bench: cannot cut the outbox row out of bench/order.sql" >&2; exit 1; }
bare=$(pgbench "$scratch" "$clients" .run/bench/order-bare.sql)
with_outbox=$(pgbench "$scratch" "$clients" bench/order.sql)
read -r bare_tps bare_cpu_ms <<<"$bare"
read -r outbox_tps _ <<<"$with_outbox"
"$pg_bin/psql" -q "$admin/postgres" -c "drop database if exists $scratch"

echo "drain: $drain_events events..." >&2
consumer=$(cat .run/consumer.pid)
kill -TERM "$consumer"
# Whatever happens from here, the consumer runs again afterwards (up.sh starts only what is down).
trap 'hack/up.sh >/dev/null' EXIT
while kill -0 "$consumer" 2>/dev/null; do sleep 0.05; done
filled=$(loadgen fill --events "$drain_events") # prints the id ranges it used
read -r product_min product_max customer_min customer_max <<<"$filled"
hack/up.sh >/dev/null # starts the consumer again, and only it
drain=$(loadgen drain --events "$drain_events")

echo "ceiling: pgbench of the point lookups on the read database, $lookup_clients clients, ${duration}s..." >&2
lookups=$(pgbench analytics_read "$lookup_clients" bench/lookup.sql \
  -D "product_min=$product_min" -D "product_max=$product_max" \
  -D "customer_min=$customer_min" -D "customer_max=$customer_max")
read -r lookup_tps _ <<<"$lookups"
# bench/lookup.sql holds two lookups a transaction.
lookup_ceiling=$(awk -v tps="$lookup_tps" 'BEGIN { printf "%.1f", 2 * tps }')

processes=()
for name in postgres rabbitmq command consumer query; do
  processes+=(--process "$name=$(cat ".run/$name.pid")")
done
loadgen measure --bare-tps "$bare_tps" --bare-cpu-ms "$bare_cpu_ms" --outbox-tps "$outbox_tps" \
  --lookup-ceiling "$lookup_ceiling" --drain-events-per-s "$drain" --duration "${duration}s" \
  --freshness-rate "$freshness_rate" --lookup-clients "$lookup_clients" \
  --large-products "$large_products" --large-orders "$large_orders" "${processes[@]}" "$@"
