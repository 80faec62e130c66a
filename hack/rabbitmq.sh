#!/usr/bin/env bash
# A private RabbitMQ node in a directory of its own, for `make up`, `make test` and the tests that stop the broker.
#
#   hack/rabbitmq.sh start DIR AMQP_PORT [DIST_PORT EPMD_PORT]   start and wait until AMQP answers; writes DIR/pid
#   hack/rabbitmq.sh stop DIR                                    SIGTERM to the broker, wait, then stop its epmd
#
# Everything the node owns lives in DIR: its name, cookie (HOME), data, logs, config and a private epmd port,
# so it never meets the machine's own RabbitMQ. Every listener (AMQP, Erlang distribution, epmd) is on
# 127.0.0.1. DIR/pid is the Erlang VM itself: killing it stops the broker.
# With RABBITMQ_TLS_DIR (ca.crt, server.crt, server.key) and RABBITMQ_TLS_PORT set, it also has a TLS listener.
# RABBITMQ_EXTRA_CONF names a file of further rabbitmq.conf settings, appended.
set -euo pipefail

RABBITMQ_HOME=${RABBITMQ_HOME:-/usr/lib/rabbitmq}
[ -x "$RABBITMQ_HOME/bin/rabbitmq-server" ] || { echo "rabbitmq.sh: rabbitmq-server not found; install it (apt-get install rabbitmq-server)" >&2; exit 1; }

cmd=${1:?usage: rabbitmq.sh start|stop DIR [AMQP_PORT DIST_PORT EPMD_PORT]}
dir=$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)

alive() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

case "$cmd" in
start)
  port=${3:?AMQP_PORT}
  dist=${4:-$((port + 100))}
  epmd=${5:-$((port + 101))}
  if alive; then echo "rabbitmq.sh: already running in $dir" >&2; exit 0; fi
  mkdir -p "$dir/home" "$dir/data" "$dir/log"
  echo "[]." > "$dir/enabled_plugins"
  cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
loopback_users = none
log.console = false
log.file.level = warning
CONF
  if [ -n "${RABBITMQ_TLS_DIR:-}" ]; then
    cat >> "$dir/rabbitmq.conf" <<CONF
listeners.ssl.default = 127.0.0.1:${RABBITMQ_TLS_PORT:?RABBITMQ_TLS_PORT}
ssl_options.cacertfile = $RABBITMQ_TLS_DIR/ca.crt
ssl_options.certfile = $RABBITMQ_TLS_DIR/server.crt
ssl_options.keyfile = $RABBITMQ_TLS_DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
  fi
  if [ -n "${RABBITMQ_EXTRA_CONF:-}" ]; then cat "$RABBITMQ_EXTRA_CONF" >> "$dir/rabbitmq.conf"; fi
  echo "$epmd" > "$dir/epmd_port"
  (
    export HOME="$dir/home" RUNNING_UNDER_SYSTEMD=true \
      RABBITMQ_NODENAME="rabbit-$port@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" ERL_EPMD_PORT="$epmd" ERL_EPMD_ADDRESS=127.0.0.1 \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
      RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$dir/data" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PID_FILE="$dir/vm.pid"
    cd "$dir"
    exec setsid "$RABBITMQ_HOME/bin/rabbitmq-server" >"$dir/console.log" 2>&1 </dev/null
  ) &
  echo $! > "$dir/pid"
  # Ready when the AMQP listener accepts connections: RabbitMQ opens it last, after boot.
  for _ in $(seq 1 240); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then exit 0; fi
    alive || { echo "rabbitmq.sh: broker exited during start-up; see $dir/console.log and $dir/log" >&2; tail -n 20 "$dir/console.log" >&2; exit 1; }
    sleep 0.25
  done
  echo "rabbitmq.sh: broker did not open port $port within 60 s; see $dir/log" >&2
  exit 1
  ;;
stop)
  if alive; then
    pid=$(cat "$dir/pid")
    kill -TERM "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
  # The VM started a private epmd on its own port; stop that too.
  if [ -f "$dir/epmd_port" ]; then
    ERL_EPMD_PORT=$(cat "$dir/epmd_port") epmd -kill >/dev/null 2>&1 || true
  fi
  ;;
*) echo "usage: rabbitmq.sh start|stop DIR [AMQP_PORT DIST_PORT EPMD_PORT]" >&2; exit 2 ;;
esac
