#!/usr/bin/env bash
# A private PostgreSQL cluster in a directory of its own, for `make up` and `make test`.
#
#   hack/postgres.sh start DIR PORT   initdb on first use, then start; prints nothing, writes DIR/url and DIR/pid
#   hack/postgres.sh stop DIR         fast shutdown, by the postmaster's PID
#
# The cluster listens on 127.0.0.1 only, with no Unix socket (socket paths have a length limit and CI
# clones live in deep directories). The superuser password is generated once and kept in DIR/password.
# With PG_TLS_DIR set to a directory holding server.crt and server.key, it also speaks TLS (ssl=on).
set -euo pipefail

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$PG_BIN/initdb" ] || { echo "postgres.sh: initdb not found; install PostgreSQL (apt-get install postgresql)" >&2; exit 1; }

cmd=${1:?usage: postgres.sh start|stop DIR [PORT]}
dir=$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)
data="$dir/data"

# PostgreSQL refuses to run as root: as root, run it as the postgres system user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
start)
  port=${3:?PORT}
  if [ ! -f "$data/PG_VERSION" ]; then
    [ -f "$dir/password" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/password")
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
    as_owner test -r "$dir/password" || { echo "postgres.sh: user postgres cannot reach $dir; make its parent directories traversable" >&2; exit 1; }
    as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=scram-sha-256 --pwfile="$dir/password" \
      --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  if as_owner "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    echo "postgres.sh: already running in $dir" >&2
  else
    tls=
    if [ -n "${PG_TLS_DIR:-}" ]; then
      # The server reads its key only if the key is its own and private.
      mkdir -p "$dir/tls"
      cp "$PG_TLS_DIR/server.crt" "$PG_TLS_DIR/server.key" "$dir/tls/"
      chmod 600 "$dir/tls/server.key"
      [ "$(id -u)" = 0 ] && chown -R postgres "$dir/tls"
      tls="-c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key"
    fi
    # Extra server settings (e.g. fsync=off for tests) come from PG_OPTS.
    as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=300 $tls ${PG_OPTS:-}" start >/dev/null
  fi
  head -n1 "$data/postmaster.pid" > "$dir/pid"
  # It holds the superuser's password: the owner's only, as the password file is.
  (umask 077 && printf 'postgres://postgres:%s@127.0.0.1:%s' "$(cat "$dir/password")" "$port" >"$dir/url.new")
  mv "$dir/url.new" "$dir/url"
  ;;
stop)
  if [ -f "$data/postmaster.pid" ]; then
    as_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
  fi
  rm -f "$dir/pid"
  ;;
*) echo "usage: postgres.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
