# The managed RabbitMQ's users: written into the directory $1 by the broker pod's `definitions` init
# container on every start, as definitions.json (the vhost, the administrator, and a user per service with
# its permissions) and analytics.conf, which makes the broker import them at boot. RabbitMQ imports
# definitions on every boot, so a broker made before these users existed gets them, and a changed password
# takes effect on the next start.
#
#   analytics  administrator: the operator's queue-depth reads and people
#   command    declares the topology and publishes to the events exchange (the relay)
#   consumer   declares the topology, consumes the two event queues and publishes to the dead-letter exchange
#   query      reads queue depths with passive declares of the two event queues, which RabbitMQ 4.3.1 (and
#              4.2.7) allows with any permission on the queue: write, which alone lets it do nothing else
#              to them (a bind also needs read on an exchange, a consume or purge read, a delete configure);
#              4.3.0 and 4.2.6 asked for configure, and 4.2.5 and earlier for none
#   $CLUSTER_OPERATOR_USER, if set: the RabbitMQ cluster operator's default user, an administrator, which
#              it uses for the management API (its version annotation and quorum status); a broker that
#              imports definitions at boot does not create it
#
# Permissions are regular expressions over the names of kit::amqp::declare_topology. Declaring the topology
# needs more than its users' own work: a queue.bind needs write on the queue and read on the exchange, and
# a queue with a dead-letter exchange needs read on the queue and write on that exchange. The relay declares
# the queues too, so that no event is published before they exist, and so it may read them.
# Passwords come from RABBITMQ_DEFAULT_PASS and COMMAND_PASSWORD, CONSUMER_PASSWORD, QUERY_PASSWORD.
#
# With ERLANG_COOKIE set (the managed node), it also writes the Erlang cookie to $HOME/.erlang.cookie,
# readable by its owner only as Erlang insists, where the node and its CLI tools (the probes) read it; the
# RABBITMQ_ERLANG_COOKIE variable that did this is deprecated since RabbitMQ 3.9. A cookie that differs
# (the Secret changed) replaces the old one; the cluster operator writes its nodes' cookie itself.
set -euo pipefail
out=${1:?usage: rabbitmq-definitions.sh DIR}

json() { # a JSON string
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

user() { # name, password, tags
  printf '{"name": %s, "password": %s, "tags": %s}' "$(json "$1")" "$(json "$2")" "$(json "$3")"
}

permission() { # user, configure, write, read
  printf '{"user": %s, "vhost": "/", "configure": %s, "write": %s, "read": %s}' \
    "$(json "$1")" "$(json "$2")" "$(json "$3")" "$(json "$4")"
}

topology='^(analytics-events|analytics-dead-letter|order-events|product-events)$'

operator_user='' operator_permission=''
if [ -n "${CLUSTER_OPERATOR_USER:-}" ]; then
  operator_user=",
    $(user "$CLUSTER_OPERATOR_USER" "${CLUSTER_OPERATOR_PASSWORD:?}" administrator)"
  operator_permission=",
    $(permission "$CLUSTER_OPERATOR_USER" '.*' '.*' '.*')"
fi

umask 077
cat >"$out/definitions.json" <<JSON
{
  "vhosts": [{"name": "/"}],
  "users": [
    $(user analytics "${RABBITMQ_DEFAULT_PASS:?}" administrator),
    $(user command "${COMMAND_PASSWORD:?}" ""),
    $(user consumer "${CONSUMER_PASSWORD:?}" ""),
    $(user query "${QUERY_PASSWORD:?}" "")$operator_user
  ],
  "permissions": [
    $(permission analytics '.*' '.*' '.*'),
    $(permission command "$topology" "$topology" "$topology"),
    $(permission consumer "$topology" '^(analytics-dead-letter|order-events|product-events)$' "$topology"),
    $(permission query '^$' '^(order-events|product-events)$' '^$')$operator_permission
  ]
}
JSON
printf 'load_definitions = %s/definitions.json\n' "$out" >"$out/analytics.conf"

if [ -n "${ERLANG_COOKIE:-}" ]; then
  cookie="${HOME:?}/.erlang.cookie"
  if [ ! -f "$cookie" ] || [ "$(cat "$cookie")" != "$ERLANG_COOKIE" ]; then
    rm -f "$cookie"
    printf '%s' "$ERLANG_COOKIE" >"$cookie"
    chmod 400 "$cookie"
  fi
fi
