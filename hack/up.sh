#!/usr/bin/env bash
# `make up`: the whole pipeline on this machine, in .run/. Idempotent: it starts only what is not running.
#
# Ports (environment overrides): PG_PORT 55432, AMQP_PORT 5672, RABBITMQ_DIST_PORT 25672,
# RABBITMQ_EPMD_PORT 24369, COMMAND_PORT 8080, QUERY_PORT 8081, COMMAND_ADMIN_PORT 8090 and
# QUERY_ADMIN_PORT 8091 (their /healthz, /readyz and /metrics), CONSUMER_PORT 8082 (the consumer's).
# Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT=${PG_PORT:-55432}
AMQP_PORT=${AMQP_PORT:-5672}
RABBITMQ_DIST_PORT=${RABBITMQ_DIST_PORT:-25672}
RABBITMQ_EPMD_PORT=${RABBITMQ_EPMD_PORT:-24369}
COMMAND_PORT=${COMMAND_PORT:-8080}
QUERY_PORT=${QUERY_PORT:-8081}
CONSUMER_PORT=${CONSUMER_PORT:-8082}
COMMAND_ADMIN_PORT=${COMMAND_ADMIN_PORT:-8090}
QUERY_ADMIN_PORT=${QUERY_ADMIN_PORT:-8091}
RUN=.run

hack/deps.sh
mkdir -p "$RUN"
# The binaries first (about 20 minutes the first time): a build that fails leaves nothing running.
echo "building the services (release)..."
cargo build --release --locked -q -p command-service -p consumer-service -p query-service
release=${CARGO_TARGET_DIR:-target}/release

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

if alive postgres; then echo "postgres  already running (pid $(cat "$RUN/postgres.pid"))"; else
  # pg_stat_statements: `make bench` breaks PostgreSQL's time per order down by statement.
  PG_OPTS="-c shared_preload_libraries=pg_stat_statements ${PG_OPTS:-}" hack/postgres.sh start "$RUN/postgres" "$PG_PORT"
  cp "$RUN/postgres/pid" "$RUN/postgres.pid"
  ln -sfn postgres/postgres.log "$RUN/postgres.log"
  echo "postgres  started on 127.0.0.1:$PG_PORT (pid $(cat "$RUN/postgres.pid"))"
fi
if alive rabbitmq; then echo "rabbitmq  already running (pid $(cat "$RUN/rabbitmq.pid"))"; else
  hack/rabbitmq.sh start "$RUN/rabbitmq" "$AMQP_PORT" "$RABBITMQ_DIST_PORT" "$RABBITMQ_EPMD_PORT"
  cp "$RUN/rabbitmq/pid" "$RUN/rabbitmq.pid"
  ln -sfn rabbitmq/console.log "$RUN/rabbitmq.log"
  echo "rabbitmq  started on 127.0.0.1:$AMQP_PORT (pid $(cat "$RUN/rabbitmq.pid"))"
fi

admin=$(cat "$RUN/postgres/url")
for db in analytics_write analytics_read; do
  if [ -z "$(psql "$admin/postgres" -tAc "select 1 from pg_database where datname = '$db'")" ]; then
    psql "$admin/postgres" -qc "create database $db"
  fi
done

umask 077
# One bearer token, accepted by both APIs; kept across runs so that running services and clients agree.
[ -s "$RUN/api-token" ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$RUN/api-token"
# The same as a header for `curl -H @file`, which keeps the token out of the process list.
printf 'Authorization: Bearer %s\n' "$(cat "$RUN/api-token")" > "$RUN/api-auth"
cat > "$RUN/env" <<ENV
export WRITE_DATABASE_URL='$admin/analytics_write'
export READ_DATABASE_URL='$admin/analytics_read'
export AMQP_URL='amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f'
export COMMAND_URL='http://127.0.0.1:$COMMAND_PORT'
export QUERY_URL='http://127.0.0.1:$QUERY_PORT'
export API_TOKEN='$(cat "$RUN/api-token")'
export API_AUTH='$PWD/$RUN/api-auth'
ENV
umask 022
# shellcheck source=/dev/null
. "$RUN/env"

"$release/command-service" migrate >/dev/null
"$release/consumer-service" migrate >/dev/null

start() { # name url-for-readiness command...
  local name=$1 ready=$2; shift 2
  if alive "$name"; then echo "$name   already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  nohup "$@" >>"$RUN/$name.log" 2>&1 </dev/null &
  echo $! > "$RUN/$name.pid"
  for _ in $(seq 1 120); do
    curl -fs "$ready" >/dev/null 2>&1 && { echo "$name   started (pid $(cat "$RUN/$name.pid"))"; return; }
    alive "$name" || { echo "$name exited; see $RUN/$name.log" >&2; tail -n 20 "$RUN/$name.log" >&2; exit 1; }
    sleep 0.25
  done
  echo "$name did not become ready; see $RUN/$name.log" >&2; exit 1
}

start command "http://127.0.0.1:$COMMAND_ADMIN_PORT/readyz" "$release/command-service" serve \
  --listen "127.0.0.1:$COMMAND_PORT" --admin-listen "127.0.0.1:$COMMAND_ADMIN_PORT"
start consumer "http://127.0.0.1:$CONSUMER_PORT/readyz" "$release/consumer-service" serve --listen "127.0.0.1:$CONSUMER_PORT"
start query "http://127.0.0.1:$QUERY_ADMIN_PORT/readyz" "$release/query-service" \
  --listen "127.0.0.1:$QUERY_PORT" --admin-listen "127.0.0.1:$QUERY_ADMIN_PORT"

cat <<MSG

The pipeline is up.
  command API   $COMMAND_URL   (OpenAPI: $COMMAND_URL/api/openapi.json, metrics: http://127.0.0.1:$COMMAND_ADMIN_PORT/metrics)
  query API     $QUERY_URL   (OpenAPI: $QUERY_URL/api/openapi.json, sync: $QUERY_URL/api/analytics/sync-status)
                                         (metrics: http://127.0.0.1:$QUERY_ADMIN_PORT/metrics)
  consumer      http://127.0.0.1:$CONSUMER_PORT/metrics
  PostgreSQL    127.0.0.1:$PG_PORT   databases analytics_write, analytics_read
  RabbitMQ      127.0.0.1:$AMQP_PORT
Both APIs take the bearer token in \$API_TOKEN; \$API_AUTH is a file with its header:
  curl -H @\$API_AUTH \$QUERY_URL/api/analytics/sync-status
Connection settings: . $RUN/env      Logs and pids: $RUN/<name>.log, $RUN/<name>.pid      Stop: make down
MSG
