#!/usr/bin/env bash
# `make down`: stops everything `make up` started, by PID, services first. With --services, only the
# command, consumer and query services (PostgreSQL and RabbitMQ keep running).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run

for name in command consumer query; do
  pidfile="$RUN/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    echo "$name stopped"
  fi
  rm -f "$pidfile"
done
[ "${1:-}" = --services ] && exit 0
if [ -d "$RUN/rabbitmq" ]; then hack/rabbitmq.sh stop "$RUN/rabbitmq"; rm -f "$RUN/rabbitmq.pid"; echo "rabbitmq stopped"; fi
if [ -d "$RUN/postgres" ]; then hack/postgres.sh stop "$RUN/postgres"; rm -f "$RUN/postgres.pid"; echo "postgres stopped"; fi
