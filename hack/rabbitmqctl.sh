#!/usr/bin/env bash
# rabbitmqctl for a private node started by hack/rabbitmq.sh: hack/rabbitmqctl.sh DIR COMMAND...
# e.g. hack/rabbitmqctl.sh .run/rabbitmq list_queues name messages
set -euo pipefail
dir=$(cd "${1:?usage: rabbitmqctl.sh DIR COMMAND...}" && pwd); shift
port=$(sed -n 's/^listeners.tcp.default = 127.0.0.1:\([0-9]*\)$/\1/p' "$dir/rabbitmq.conf")
HOME="$dir/home" ERL_EPMD_PORT=$(cat "$dir/epmd_port") \
  exec "${RABBITMQ_HOME:-/usr/lib/rabbitmq}/bin/rabbitmqctl" -q -n "rabbit-$port@localhost" "$@"
