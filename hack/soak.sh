#!/usr/bin/env bash
# `make soak`: does the consumer always stop within its grace period? On the `make up` pipeline, RUNS
# runs (10) of MINUTES minutes (10) each: orders flow at about RATE a second (50) while the broker and
# PostgreSQL restart by turns every INTERVAL seconds (45), the broker killed outright every third time;
# then the consumer gets SIGTERM, by turns with the broker up and with the broker down. It must exit
# within 20 s (its stop budget; Kubernetes' grace period is 30 s). Each run prints how long the stop
# took; the last line counts the runs that overran. Afterwards the pipeline is left running, in sync.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10} MINUTES=${MINUTES:-10} RATE=${RATE:-50} INTERVAL=${INTERVAL:-45}
GRACE=20
RUN=.run

hack/up.sh >/dev/null
# shellcheck source=/dev/null
. "$RUN/env"
PG_PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$RUN/postgres/url")
AMQP_PORT=${AMQP_PORT:-5672} RABBITMQ_DIST_PORT=${RABBITMQ_DIST_PORT:-25672} RABBITMQ_EPMD_PORT=${RABBITMQ_EPMD_PORT:-24369}

broker_up() {
  hack/rabbitmq.sh start "$RUN/rabbitmq" "$AMQP_PORT" "$RABBITMQ_DIST_PORT" "$RABBITMQ_EPMD_PORT" >/dev/null
  cp "$RUN/rabbitmq/pid" "$RUN/rabbitmq.pid"
}
broker_down() { hack/rabbitmq.sh stop "$RUN/rabbitmq" >/dev/null; }
broker_kill() { # SIGKILL of the Erlang VM; its private epmd goes with `stop`
  local vm; vm=$(cat "$RUN/rabbitmq/vm.pid" 2>/dev/null || true)
  [ -n "$vm" ] && kill -KILL "$vm" 2>/dev/null || true
  broker_down
}
postgres_restart() {
  hack/postgres.sh stop "$RUN/postgres" >/dev/null
  hack/postgres.sh start "$RUN/postgres" "$PG_PORT" >/dev/null
  cp "$RUN/postgres/pid" "$RUN/postgres.pid"
}

# One product with stock enough for every order of every run.
product=$(curl -fsS -H @"$API_AUTH" -H 'content-type: application/json' "$COMMAND_URL/api/products" \
  -d '{"name": "Soak", "category": "Soak", "price": 1, "stock": 1000000000}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["productId"])')

load() { # orders at RATE a second until killed; failures (503 while PostgreSQL restarts) are counted
  exec python3 - "$COMMAND_URL" "$API_TOKEN" "$product" "$RATE" <<'PY'
import json, sys, threading, time, urllib.request
url, token, product, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
body = json.dumps({"customerId": 1, "items": [{"productId": product, "quantity": 1}]}).encode()
def send():
    request = urllib.request.Request(url + "/api/orders", body, {"content-type": "application/json", "authorization": "Bearer " + token})
    try:
        urllib.request.urlopen(request, timeout=10).read()
    except Exception:
        pass
while True:
    started = time.monotonic()
    threads = [threading.Thread(target=send) for _ in range(int(rate))]
    for t in threads: t.start()
    for t in threads: t.join()
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
PY
}

overran=0
for run in $(seq 1 "$RUNS"); do
  load & load_pid=$!
  deadline=$((SECONDS + MINUTES * 60)) turn=0
  while [ $SECONDS -lt $deadline ]; do
    sleep "$INTERVAL"
    turn=$((turn + 1))
    case $((turn % 3)) in
      0) broker_kill; sleep 3; broker_up ;;
      1) broker_down; sleep 3; broker_up ;;
      2) postgres_restart ;;
    esac
  done
  [ $((run % 2)) = 1 ] && broker_down
  consumer=$(cat "$RUN/consumer.pid")
  started=$(date +%s%N)
  kill -TERM "$consumer"
  while kill -0 "$consumer" 2>/dev/null; do
    sleep 0.1
    if [ $(($(date +%s%N) - started)) -gt $(((GRACE + 10) * 1000000000)) ]; then kill -KILL "$consumer"; fi
  done
  took_ms=$((($(date +%s%N) - started) / 1000000))
  kill "$load_pid" 2>/dev/null; wait "$load_pid" 2>/dev/null || true
  broker_up
  verdict=ok
  if [ "$took_ms" -gt $((GRACE * 1000)) ]; then verdict=OVERRAN; overran=$((overran + 1)); fi
  printf 'run %d/%d: consumer stopped in %d.%d s (broker %s at SIGTERM) %s\n' "$run" "$RUNS" \
    $((took_ms / 1000)) $((took_ms % 1000 / 100)) \
    "$([ $((run % 2)) = 1 ] && echo down || echo up)" "$verdict"
  rm -f "$RUN/consumer.pid"
  hack/up.sh >/dev/null
done

# Everything accepted reaches the read model.
for _ in $(seq 1 240); do
  status=$(curl -fsS -H @"$API_AUTH" "$QUERY_URL/api/analytics/sync-status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = in_sync ] && break
  sleep 1
done
echo "sync-status after the last run: $status"
echo "soak: $overran of $RUNS runs overran the ${GRACE} s stop budget"
[ "$overran" = 0 ] && [ "$status" = in_sync ]
