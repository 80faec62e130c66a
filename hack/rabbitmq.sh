#!/usr/bin/env bash
# A private RabbitMQ node in a directory of its own, for `make up`, `make test` and the tests that stop the broker.
#
#   hack/rabbitmq.sh start DIR AMQP_PORT [DIST_PORT EPMD_PORT]   start and wait until AMQP answers; writes DIR/pid
#   hack/rabbitmq.sh stop DIR                                    SIGTERM to the broker, wait, then stop its epmd
#   hack/rabbitmq.sh ctl DIR COMMAND...                          rabbitmqctl against it, e.g. list_queues name messages
#
# The broker is the one the cluster runs: the root filesystem of the rabbitmq image (RabbitMQ 4.3 on its own
# Erlang; `hack/images.sh rabbitmq-root` builds and unpacks it, or RABBITMQ_ROOT names it), run from this
# host's network in a private mount namespace: chroot into the image's root, with DIR (and
# RABBITMQ_TLS_DIR) bound in at the same paths. Its Erlang needs a newer glibc than Debian 12's, so it does
# not run from the host's libraries. As root, or as a user with unprivileged user namespaces.
#
# Everything the node owns lives in DIR: its name, cookie (HOME), data, logs, config and a private epmd port,
# so it never meets the machine's own RabbitMQ. Every listener (AMQP, Erlang distribution, epmd) is on
# 127.0.0.1. DIR/pid is the Erlang VM itself: killing it stops the broker.
# With RABBITMQ_TLS_DIR (ca.crt, server.crt, server.key) and RABBITMQ_TLS_PORT set, it also has a TLS listener.
# RABBITMQ_EXTRA_CONF names a file of further rabbitmq.conf settings, appended.
set -euo pipefail

cmd=${1:?usage: rabbitmq.sh start|stop|ctl DIR [AMQP_PORT DIST_PORT EPMD_PORT | COMMAND...]}
dir=$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)
root=${RABBITMQ_ROOT:-$("$(dirname "$0")/images.sh" rabbitmq-root)}
[ -x "$root/usr/lib/rabbitmq/bin/rabbitmq-server" ] || { echo "rabbitmq.sh: no RabbitMQ in $root" >&2; exit 1; }

alive() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

# in_root ENV... -- COMMAND...: COMMAND inside the image's root, with the environment ENV only, and DIR,
# RABBITMQ_TLS_DIR, /dev and /proc bound in; every step execs, so the caller's $! is COMMAND's process.
in_root() {
  local -a env=() binds=("$dir") namespace=(unshare --mount --propagation private)
  while [ "$1" != -- ]; do env+=("$1"); shift; done
  shift
  [ -z "${RABBITMQ_TLS_DIR:-}" ] || binds+=("$(cd "$RABBITMQ_TLS_DIR" && pwd)")
  [ "$(id -u)" = 0 ] || namespace+=(--map-root-user)
  mkdir -p "${binds[@]/#/$root}"
  # shellcheck disable=SC2016
  exec "${namespace[@]}" -- sh -c 'root=$1; shift
    while [ "$1" != -- ]; do mount --bind "$1" "$root$1"; shift; done; shift
    mount --rbind /dev "$root/dev" && mount --rbind /proc "$root/proc" && exec chroot "$root" "$@"' \
    in-root "$root" "${binds[@]}" -- env -i PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME="$dir/home" "${env[@]}" "$@"
}

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
    cd "$dir"
    in_root RUNNING_UNDER_SYSTEMD=true \
      RABBITMQ_NODENAME="rabbit-$port@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" ERL_EPMD_PORT="$epmd" ERL_EPMD_ADDRESS=127.0.0.1 \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
      RABBITMQ_CONFIG_FILES="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$dir/data" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PID_FILE="$dir/vm.pid" \
      -- setsid sh -c "cd '$dir' && exec rabbitmq-server" >"$dir/console.log" 2>&1 </dev/null
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
    (in_root ERL_EPMD_PORT="$(cat "$dir/epmd_port")" -- epmd -kill >/dev/null 2>&1) || true
  fi
  # The mount point in_root made in the root (empty again now).
  rmdir "$root$dir" 2>/dev/null || true
  ;;
ctl)
  port=$(sed -n 's/^listeners.tcp.default = 127.0.0.1:\([0-9]*\)$/\1/p' "$dir/rabbitmq.conf")
  in_root ERL_EPMD_PORT="$(cat "$dir/epmd_port")" -- rabbitmqctl -q -n "rabbit-$port@localhost" "${@:3}"
  ;;
*) echo "usage: rabbitmq.sh start|stop|ctl DIR [AMQP_PORT DIST_PORT EPMD_PORT | COMMAND...]" >&2; exit 2 ;;
esac
