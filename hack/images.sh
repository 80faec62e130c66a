#!/usr/bin/env bash
# Every container image the local single-node cluster runs, built on this machine from Debian packages
# (bookworm; the broker's from forky) or Go modules, nothing pulled from a container registry, and kept as OCI
# archives outside the repo:
#
#   hack/images.sh bases                  builds the base images that are not cached yet and prints their
#                                         archives, one a line:
#       localhost/analytics-runtime:bookworm         stands in for gcr.io/distroless/cc-debian12:nonroot,
#                                                    the Dockerfile's RUNTIME_IMAGE
#       localhost/postgres:15                        stands in for postgres:15, the managed PostgreSQL
#       localhost/rabbitmq:4.3-management            stands in for rabbitmq:4.3-management, the managed broker
#       registry.k8s.io/pause:3.10                   the pod sandbox, built from hack/pause
#   hack/images.sh monitoring             builds the Prometheus stack of `make cluster MONITORING=1` (from the
#                                         Go modules pinned in hack/prometheus-operator and hack/prometheus)
#                                         unless cached, and prints the archives:
#       localhost/prometheus-operator:v0.85.0        stands in for quay.io/prometheus-operator/prometheus-operator
#       localhost/prometheus-config-reloader:v0.85.0 stands in for quay.io/prometheus-operator/prometheus-config-reloader
#       localhost/prometheus:v3.5.0                  stands in for quay.io/prometheus/prometheus
#   hack/images.sh ha                     builds the operators of `make cluster HA=1` (from the Go modules pinned
#                                         in hack/cnpg and hack/rabbitmq-cluster-operator) unless cached, and
#                                         prints the archives:
#       localhost/cloudnative-pg:1.30.0              stands in for ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0
#       localhost/rabbitmq-cluster-operator:2.22.1   stands in for ghcr.io/rabbitmq/cluster-operator:2.22.1
#                                                    (from the module pinned in hack/rabbitmq-cluster-operator)
#   hack/images.sh rabbitmq-root          builds the rabbitmq image unless cached, unpacks it into
#                                         $CACHE/roots/ once, and prints the directory: the broker that
#                                         hack/rabbitmq.sh runs for `make up` and `make test`
#   hack/images.sh services BINDIR TAG    builds ghcr.io/analytics-pipeline/analytics-{command,consumer,query,
#                                         operator}:TAG from the repo's Dockerfile with the release binaries
#                                         in BINDIR (command-service, consumer-service, query-service,
#                                         operator, healthcheck) on the runtime image, and prints the archives
#   hack/images.sh load SOCKET ARCHIVE... imports the archives into the containerd at SOCKET (namespace
#                                         k8s.io), skipping those it already holds
#   hack/images.sh ref NAME               prints what the archives call NAME: a base image's REPOSITORY:TAG
#                                         (runtime, postgres, rabbitmq, pause), a service image's REPOSITORY
#                                         (command, consumer, query, operator; its tag is services' TAG)
#
# Archives live in $CACHE/images/ as NAME-KEY.tar, written to a .part file and renamed when complete. A base
# image's key hashes its recipe below (`declare -f` of the functions: their code and here-documents, not
# their comments), the Debian suite and mirror (the host's apt mirror; DEBIAN_MIRROR overrides it), and for the
# pause image hack/pause and the Go version; a service image's key hashes its binary, healthcheck, the
# Dockerfile, the runtime archive and TAG. Unchanged keys are not rebuilt, and old archives are not pruned.
# The packages are the suite's current ones, so a point release changes the contents but not the key:
# delete the archives to pick one up. Builds use mmdebstrap, buildah's default storage (working containers
# and built images are removed again) and, for pause, Go; they need root.
#
# The chart's images values point the operator at them (hack/cluster.sh writes those from `ref`); Debian 12
# has PostgreSQL 15, not the chart's default 16. Pods must not pull these images: imagePullPolicy
# IfNotPresent (the default) or Never.
#
# Where these images differ from the ones they stand in for:
#   runtime   Debian 12's libc6, libgcc-s1, libgomp1, libstdc++6, libssl3, tzdata, netbase, base-files and a
#             CA bundle of every Mozilla certificate, the same set as distroless cc, extracted from the
#             packages: no shell, dpkg or apt, like distroless. No /var/lib/dpkg/status.d (scanners see no
#             packages), no /etc/ld.so.cache (glibc searches the multiarch directories), no
#             /etc/ssl/openssl.cnf (it is the openssl package's, not libssl3's).
#   postgres  Debian's postgresql-15 (the current bookworm point release), not the PGDG build the official
#             image installs. Clusters are initialised with LANG=C.UTF-8 (UTF8, code-point collation), not
#             en_US.utf8; no LLVM JIT (the provider is left out, so jit=on does nothing) and no locale sources
#             (/usr/share/i18n: localedef cannot make new locales); /usr/lib/postgresql/15/bin comes first on
#             PATH, not last (pg_isready and psql skip Debian's perl pg_wrapper).
#             The entrypoint keeps the official one's contract: POSTGRES_PASSWORD (required unless
#             POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER, POSTGRES_DB, POSTGRES_INITDB_ARGS,
#             POSTGRES_HOST_AUTH_METHOD, the *_FILE variants, PGDATA, and /docker-entrypoint-initdb.d/ with
#             *.sh, *.sql and *.sql.gz, run only on an empty PGDATA; `host all all all scram-sha-256` appended
#             to initdb's defaults (which trust local and loopback connections, as in the official image);
#             listen_addresses = '*' from the sample config; root drops to postgres (uid 999) with setpriv,
#             not gosu. It lacks: nss_wrapper for uids that have no passwd entry, POSTGRES_INITDB_WALDIR,
#             *.sql.xz and *.sql.zst init files, the password-length warning, docker-ensure-initdb.sh, less.
#   rabbitmq  Debian's rabbitmq-server 4.3 on Debian's Erlang (forky, Debian's testing suite: bookworm has
#             3.10 and trixie 4.0, both out of support), not 4.3.x on the official image's own Erlang/OpenSSL
#             build. Enabled plugins: rabbitmq_management and rabbitmq_prometheus, as in the -management
#             image; logs go to stdout only (log.file = false). RabbitMQ lives in /usr/lib/rabbitmq (first on
#             PATH), not /opt/rabbitmq; there is no /plugins symlink and no /root/.erlang.cookie.
#             RABBITMQ_DEFAULT_USER/PASS/VHOST and RABBITMQ_ERLANG_COOKIE are read by RabbitMQ itself, as with
#             the official image; the entrypoint also writes the cookie to $HOME/.erlang.cookie
#             (HOME=/var/lib/rabbitmq, mode 0400, replacing a different one), where the CLI tools, and the
#             probes that run them, find it even without the variable. Root drops to rabbitmq (uid 999) with
#             setpriv, not gosu. It does not refuse the deprecated RABBITMQ_SSL_* and
#             RABBITMQ_VM_MEMORY_HIGH_WATERMARK variables (they are ignored); rabbitmqadmin is Debian's
#             rabbitmqadmin-ng.
#   pause     hack/pause/main.go: the same behaviour (reap children, exit 0 on SIGINT/SIGTERM, USER
#             65535:65535), no `-v` flag.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${ANALYTICS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/analytics-pipeline}
IMAGES="$CACHE/images"

SUITE=bookworm
# The Debian mirror this machine's apt uses (a URL that ends in /debian, without it), unless DEBIAN_MIRROR is set.
host_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v '^[[:space:]]*#' | grep -oE '(https?|file)://[^[:space:]]*/debian/?([[:space:]]|$)' | head -n 1 |
    sed -E 's#/debian/?[[:space:]]*$##' || true
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
[ -n "$MIRROR" ] || { echo "images: no Debian mirror in this machine's apt sources; set DEBIAN_MIRROR" >&2; exit 1; }
SOURCES=("deb $MIRROR/debian $SUITE main" "deb $MIRROR/debian $SUITE-updates main"
  "deb $MIRROR/debian-security $SUITE-security main")

# What each base image is called in its archive, which is the name containerd knows it by.
declare -A REF=(
  [runtime]=localhost/analytics-runtime:bookworm
  [postgres]=localhost/postgres:15
  [rabbitmq]=localhost/rabbitmq:4.3-management
  [pause]=registry.k8s.io/pause:3.10
  [prometheus-operator]=localhost/prometheus-operator:v0.85.0
  [config-reloader]=localhost/prometheus-config-reloader:v0.85.0
  [prometheus]=localhost/prometheus:v3.5.0
  [cloudnative-pg]=localhost/cloudnative-pg:1.30.0
  [rabbitmq-cluster-operator]=localhost/rabbitmq-cluster-operator:2.22.1
)
SERVICE_REGISTRY=ghcr.io/analytics-pipeline # the operator's default (crd.rs IMAGE_REGISTRY)
declare -A SERVICE_BINARY=([command]=command-service [consumer]=consumer-service [query]=query-service
  [operator]=operator)

# What a failed build leaves behind, for the EXIT trap.
work='' container='' committed='' pulled='' partial='' archive=''
cleanup() {
  [ -z "$container" ] || buildah rm "$container" >/dev/null 2>&1 || true
  [ -z "$committed" ] || buildah rmi "$committed" >/dev/null 2>&1 || true
  [ -z "$partial" ] || rm -f "$partial"
  [ -z "$pulled" ] || buildah rmi "$pulled" >/dev/null 2>&1 || true
  # --one-file-system: should mmdebstrap have died with the host's /dev still bound into the tree.
  [ -z "$work" ] || rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# A Debian root filesystem in directory $1: variant $2, packages $3 (comma-separated), further mmdebstrap
# options after them. Documentation, man pages and translations are left out, as in debian:bookworm-slim.
# The merged-usr hook that the installed images use makes /bin, /lib and /sbin symlinks into /usr, as in
# debian:bookworm, and installs usr-is-merged rather than usrmerge (which would bring perl).
debian() {
  local root=$1 variant=$2 packages=$3
  shift 3
  mmdebstrap --quiet --variant="$variant" --include="$packages" --format=directory \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    "$@" "$SUITE" "$root" "${SOURCES[@]}" >&2
  # The runtime provides /dev and the three files below; mmdebstrap copied the last two from this host.
  rm -rf "${root:?}"/dev/* "$root/etc/hostname" "$root/etc/resolv.conf"
}

# The recipes: each fills the directory $1 and sets `config`, the image's `buildah config` options.

runtime_image() {
  local root=$1 packages=base-files,netbase,tzdata,libc6,libgcc-s1,libgomp1,libstdc++6,libssl3
  # Extracted, not installed, so that only these packages' files remain: ca-certificates is there for its
  # certificates, and apt adds the dependencies (debconf, openssl) that only maintainer scripts need.
  debian "$root" extract "$packages,ca-certificates" --skip=cleanup/apt/cache
  (
    cd "$root"
    mkdir -p etc/ssl/certs home/nonroot root tmp
    # What update-ca-certificates writes with every certificate enabled.
    awk 1 usr/share/ca-certificates/mozilla/*.crt >etc/ssl/certs/ca-certificates.crt
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
      'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >etc/passwd
    printf '%s\n' 'root:x:0:' 'tty:x:5:' 'staff:x:50:' 'nobody:x:65534:' 'nonroot:x:65532:' >etc/group
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' 'networks: files' 'protocols: files' \
      'services: files' >etc/nsswitch.conf
    chown 65532:65532 home/nonroot
    chmod 0700 home/nonroot root
    chmod 1777 tmp
    {
      for package in ${packages//,/ }; do
        dpkg-deb --fsys-tarfile var/cache/apt/archives/"${package}"_*.deb | tar -t
      done | sed -e 's|^\./||' -e 's|/$||'
      printf '%s\n' etc etc/ssl etc/ssl/certs etc/ssl/certs/ca-certificates.crt etc/passwd etc/group \
        etc/nsswitch.conf home home/nonroot root tmp
    } | LC_ALL=C sort -u >../keep
    find . -mindepth 1 ! -type d -printf '%P\n' | LC_ALL=C sort | LC_ALL=C comm -23 - ../keep |
      xargs -r -d '\n' rm -f --
    # Deepest first, so that a directory emptied by the removal of its own empty directories goes too.
    find . -mindepth 1 -type d -printf '%P\n' | LC_ALL=C sort | LC_ALL=C comm -23 - ../keep | LC_ALL=C sort -r |
      xargs -r -d '\n' rmdir --ignore-fail-on-non-empty --
  )
  config=(--user 65532:65532 --workingdir /home/nonroot
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
}

postgres_image() {
  local root=$1
  # No LLVM (JIT) and no locale sources: about 150 MB the server does without. The essential hooks give
  # postgres the official image's uid and gid before postgresql-common's postinst would pick others ($1 is
  # the root directory in mmdebstrap's hooks).
  # shellcheck disable=SC2016
  debian "$root" minbase postgresql-15 --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/libLLVM-*' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/libz3.so*' \
    --dpkgopt='path-exclude=/usr/lib/postgresql/15/lib/llvmjit*' \
    --dpkgopt='path-exclude=/usr/lib/postgresql/15/lib/bitcode/*' \
    --dpkgopt='path-exclude=/usr/share/i18n/*' \
    --essential-hook='echo "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash" >>"$1/etc/passwd"' \
    --essential-hook='echo "postgres:x:999:" >>"$1/etc/group"'
  (
    cd "$root"
    # postgresql-common's postinst made a cluster in /etc; the image's cluster is $PGDATA, made at start.
    rm -rf etc/postgresql/15 var/lib/postgresql/15 var/log/postgresql/*
    sed -ri 's/^#?(create_main_cluster) .*$/\1 = false/' etc/postgresql-common/createcluster.conf
    sed -ri "s/^#?(listen_addresses)\s*=\s*\S+.*/\1 = '*'/" usr/share/postgresql/15/postgresql.conf.sample
    grep -q "^listen_addresses = '\*'" usr/share/postgresql/15/postgresql.conf.sample
    install -d -o 999 -g 999 -m 1777 var/lib/postgresql var/lib/postgresql/data
    install -d -o 999 -g 999 -m 3777 run/postgresql # /var/run is a symlink to /run
    install -d docker-entrypoint-initdb.d
    cat >usr/local/bin/docker-entrypoint.sh <<'ENTRYPOINT'
#!/usr/bin/env bash
# The official postgres image's entrypoint contract on Debian's PostgreSQL: on an empty $PGDATA, initdb as
# $POSTGRES_USER with $POSTGRES_PASSWORD, create $POSTGRES_DB, run /docker-entrypoint-initdb.d/* against a
# server listening on the socket only, stop it; then exec the command. As root, it first takes ownership of
# $PGDATA and drops to postgres. No `set -u`, as in the official one: init scripts are sourced into it.
set -Eeo pipefail

# file_env VAR [DEFAULT]: VAR, or the contents of the file VAR_FILE names (Docker and Compose secrets).
file_env() {
  local var=$1 file_var=${1}_FILE value=${2:-}
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo "error: both $var and $file_var are set (but are exclusive)" >&2
    exit 1
  fi
  if [ -n "${!var:-}" ]; then
    value=${!var}
  elif [ -n "${!file_var:-}" ]; then
    value=$(<"${!file_var}")
  fi
  export "$var=$value"
  unset "$file_var"
}

# psql as the superuser over the socket, stopping at the first error.
sql() {
  PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc \
    --dbname "${database:-$POSTGRES_DB}" "$@"
}

wants_help() {
  local arg
  for arg; do
    case $arg in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
  done
  return 1
}

initialise() { # the server's arguments
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<'EOE'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.

       See PostgreSQL documentation about "trust":
       https://www.postgresql.org/docs/current/auth-trust.html
EOE
    exit 1
  fi
  ls /docker-entrypoint-initdb.d/ >/dev/null # unreadable: fail before initdb, not half-way

  # The password travels through a pipe, never a file; --pwfile refuses an empty one, hence the newline.
  eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"
  # initdb trusts local and loopback connections; every other host authenticates with the server's
  # password_encryption (scram-sha-256), unless POSTGRES_HOST_AUTH_METHOD says otherwise.
  local auth=${POSTGRES_HOST_AUTH_METHOD:-$(postgres -C password_encryption "$@")}
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

  export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
  PGUSER=${PGUSER:-$POSTGRES_USER} pg_ctl -D "$PGDATA" -w start \
    -o "$(printf '%q ' "$@" -c listen_addresses= -p "${PGPORT:-5432}")"
  if [ -z "$(database=postgres sql --tuples-only --set db="$POSTGRES_DB" <<<"select 1 from pg_database where datname = :'db'")" ]; then
    database=postgres sql --set db="$POSTGRES_DB" <<<'create database :"db"'
  fi
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    # shellcheck disable=SC1090
    case $f in
      *.sh) if [ -x "$f" ]; then echo "$0: running $f"; "$f"; else echo "$0: sourcing $f"; . "$f"; fi ;;
      *.sql) echo "$0: running $f"; sql -f "$f" ;;
      *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | sql ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done
  PGUSER=${PGUSER:-postgres} pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  printf '\nPostgreSQL init process complete; ready for start up.\n\n'
}

if [ "${1:0:1}" = - ]; then
  set -- postgres "$@"
fi
if [ "$1" = postgres ] && ! wants_help "$@"; then
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA" || : # not ours to change on some volumes; postgres then says what is wrong
  mkdir -p /var/run/postgresql || :
  chmod 3775 /var/run/postgresql || :
  if [ "$(id -u)" = 0 ]; then
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
  fi
  if [ -s "$PGDATA/PG_VERSION" ]; then
    printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
  else
    initialise "${@:2}"
  fi
fi
exec "$@"
ENTRYPOINT
    chmod 0755 usr/local/bin/docker-entrypoint.sh
  )
  config=(--env PG_MAJOR=15 --env LANG=C.UTF-8 --env PGDATA=/var/lib/postgresql/data
    --env PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --volume /var/lib/postgresql/data --port 5432/tcp --stop-signal SIGINT
    --entrypoint '["docker-entrypoint.sh"]' --cmd '["postgres"]')
}

rabbitmq_image() {
  local root=$1 version
  # RabbitMQ 4.3 from Debian's testing suite (forky), with its Erlang: bookworm has 3.10, long out of support,
  # and trixie 4.0. Testing moves, so the series is checked: a suite that has moved on fails the build here
  # rather than ship another series under this tag. The mirror's forky Release file may be past its
  # Valid-Until (it is a snapshot); its signature is still checked.
  local SUITE=forky SOURCES=("deb $MIRROR/debian forky main")
  # The official image's uid and gid, as for postgres. netbase for /etc/hosts, /etc/services.
  # shellcheck disable=SC2016
  debian "$root" minbase rabbitmq-server,netbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --essential-hook='echo "rabbitmq:x:999:999:RabbitMQ messaging server:/var/lib/rabbitmq:/usr/sbin/nologin" >>"$1/etc/passwd"' \
    --essential-hook='echo "rabbitmq:x:999:" >>"$1/etc/group"'
  version=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Version}' rabbitmq-server)
  case $version in
  4.3.*) echo "images: rabbitmq-server $version" >&2 ;;
  *) echo "images: $SUITE has rabbitmq-server $version, not 4.3: update the rabbitmq image's tag and recipe" >&2; exit 1 ;;
  esac
  (
    cd "$root"
    install -d -o 999 -g 999 -m 1777 var/lib/rabbitmq var/log/rabbitmq etc/rabbitmq etc/rabbitmq/conf.d
    rm -f var/lib/rabbitmq/.erlang.cookie
    echo '[rabbitmq_management,rabbitmq_prometheus].' >etc/rabbitmq/enabled_plugins
    cat >etc/rabbitmq/conf.d/10-defaults.conf <<'CONF'
## The official image's defaults, and its listeners on every address; log.file = false is ours, so that the
## container's only log is stdout.
loopback_users.guest = false
listeners.tcp.default = 5672
management.tcp.port = 15672
log.console = true
log.file = false
CONF
    chown 999:999 etc/rabbitmq/enabled_plugins etc/rabbitmq/conf.d/10-defaults.conf
    cat >usr/local/bin/docker-entrypoint.sh <<'ENTRYPOINT'
#!/usr/bin/env bash
# The official rabbitmq image's entrypoint contract on Debian's rabbitmq-server. As root, it takes
# ownership of /var/lib/rabbitmq and drops to rabbitmq. RABBITMQ_ERLANG_COOKIE becomes $HOME/.erlang.cookie,
# where the CLI tools (rabbitmqctl, rabbitmq-diagnostics: the probes) find the cookie the server uses.
set -euo pipefail

if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = 0 ]; then
  if [ "$1" = rabbitmq-server ]; then
    find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
  fi
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
  cookie=$HOME/.erlang.cookie
  if [ "$(cat "$cookie" 2>/dev/null)" != "$RABBITMQ_ERLANG_COOKIE" ]; then
    (umask 0277 && rm -f "$cookie.new" && printf '%s' "$RABBITMQ_ERLANG_COOKIE" >"$cookie.new")
    mv -f "$cookie.new" "$cookie"
  fi
fi

# If the long and short host names differ, the node is rabbit@<long name>.
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
  export RABBITMQ_USE_LONGNAME=true
fi

exec "$@"
ENTRYPOINT
    chmod 0755 usr/local/bin/docker-entrypoint.sh
  )
  config=(--env RABBITMQ_DATA_DIR=/var/lib/rabbitmq --env HOME=/var/lib/rabbitmq
    --env LANG=C.UTF-8 --env LANGUAGE=C.UTF-8 --env LC_ALL=C.UTF-8
    --env PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --volume /var/lib/rabbitmq
    --port 4369/tcp --port 5671/tcp --port 5672/tcp --port 15671/tcp --port 15672/tcp --port 15691/tcp
    --port 15692/tcp --port 25672/tcp
    --entrypoint '["docker-entrypoint.sh"]' --cmd '["rabbitmq-server"]')
}

pause_image() {
  local root=$1
  mkdir -p "$root"
  (cd hack/pause && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$root/pause" .) >&2
  config=(--user 65535:65535 --entrypoint '["/pause"]')
}

# go_image ROOT MODULE PACKAGE PATH [LDFLAGS]: ROOT holds the static binary of the Go PACKAGE, built in the
# module MODULE (a directory of hack/ that pins it), at PATH, linked with LDFLAGS (a release build's version
# stamp); plus the nobody user and a /tmp.
go_image() {
  local root=$1 module=$2 package=$3 path=$4 ldflags=${5:-}
  mkdir -p "$root$(dirname "$path")" "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$root/etc/group"
  (cd "$module" && CGO_ENABLED=0 GOTOOLCHAIN=auto go build -trimpath -o "$root$path" -ldflags "-s -w $ldflags" \
    "$package") >&2
}

# prometheus_stamp VERSION REVISION: the version stamp of the Prometheus projects' release builds.
prometheus_stamp() {
  local stamp=github.com/prometheus/common/version
  echo "-X $stamp.Version=$1 -X $stamp.Revision=$2 -X $stamp.Branch=HEAD -X $stamp.BuildUser=hack/images.sh"
}

# The operator and the reloader: v0.85.0 is commit 2ed4172b18 of prometheus-operator/prometheus-operator.
prometheus_operator_image() {
  go_image "$1" hack/prometheus-operator github.com/prometheus-operator/prometheus-operator/cmd/operator \
    /bin/operator "$(prometheus_stamp 0.85.0 2ed4172b180213b6082025237bb0c155b74b6080)"
  config=(--user 65534:65534 --entrypoint '["/bin/operator"]')
}

config_reloader_image() {
  go_image "$1" hack/prometheus-operator \
    github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader \
    /bin/prometheus-config-reloader "$(prometheus_stamp 0.85.0 2ed4172b180213b6082025237bb0c155b74b6080)"
  config=(--user 65534:65534 --entrypoint '["/bin/prometheus-config-reloader"]')
}

# Prometheus v3.5.0 (module v0.305.0, commit 8be3a9560f), without its web UI: the UI's assets are
# generated by upstream's release build, not part of the module. The API, which the tests and Grafana
# use, is all there.
prometheus_image() {
  go_image "$1" hack/prometheus github.com/prometheus/prometheus/cmd/prometheus /bin/prometheus \
    "$(prometheus_stamp 3.5.0 8be3a9560fbdd18a94dedec4b747c35178177202)"
  mkdir -p "$1/prometheus"
  chown 65534:65534 "$1/prometheus"
  config=(--user 65534:65534 --workingdir /prometheus --port 9090/tcp --entrypoint '["/bin/prometheus"]'
    --cmd '["--config.file=/etc/prometheus/prometheus.yml","--storage.tsdb.path=/prometheus"]')
}

# CloudNativePG's operator, v1.30.0 (commit 4b5e244a7d of cloudnative-pg/cloudnative-pg), laid out as its
# release image: the manager at /operator/manager_amd64 (the operator finds the architectures it can
# give instances by that name, relative to its working directory /) and /manager linking to it. Its
# instances' bootstrap init container runs `/manager bootstrap /controller/manager` from this image, as
# the PostgreSQL uid, which copies `manager` from the working directory into the pod. The install
# manifest runs the operator as uid 10001.
cloudnative_pg_image() {
  local versions=github.com/cloudnative-pg/cloudnative-pg/pkg/versions
  go_image "$1" hack/cnpg github.com/cloudnative-pg/cloudnative-pg/cmd/manager /operator/manager_amd64 \
    "-X $versions.buildVersion=1.30.0 -X $versions.buildCommit=4b5e244a7d031f67e025c83c1555e7726ecbbfa1 -X $versions.buildDate=2026-06-29"
  chmod 0755 "$1/operator/manager_amd64"
  ln -s operator/manager_amd64 "$1/manager"
  config=(--user 10001:10001 --workingdir / --entrypoint '["/manager"]')
}

# The RabbitMQ cluster operator v2.22.1 (commit 940bc7a6 of rabbitmq/cluster-operator), as its release image
# lays it out: /manager, run as uid 1000. It has no version stamp to set.
rabbitmq_cluster_operator_image() {
  go_image "$1" hack/rabbitmq-cluster-operator github.com/rabbitmq/cluster-operator/v2/cmd /manager
  config=(--user 1000:1000 --workingdir / --entrypoint '["/manager"]')
}

# Sets `archive` to the archive of image $1 (runtime, postgres, rabbitmq or pause), built first unless it is
# cached. Not in a subshell, so that the EXIT trap sees what a failed build leaves.
base() {
  local name=$1 ref=${REF[$1]} key out started
  key=$(
    {
      declare -f debian commit "${name//-/_}_image"
      printf '%s\n' "$ref" "$SUITE" "${SOURCES[@]}"
      case $name in
      pause) cat hack/pause/go.mod hack/pause/main.go && go env GOVERSION ;;
      prometheus-operator | config-reloader) declare -f go_image prometheus_stamp && cat hack/prometheus-operator/go.{mod,sum} && go env GOVERSION ;;
      prometheus) declare -f go_image prometheus_stamp && cat hack/prometheus/go.{mod,sum} && go env GOVERSION ;;
      cloudnative-pg) declare -f go_image && cat hack/cnpg/go.{mod,sum} && go env GOVERSION ;;
      rabbitmq-cluster-operator) declare -f go_image && cat hack/rabbitmq-cluster-operator/go.{mod,sum} && go env GOVERSION ;;
      esac
    } | sha256sum | cut -c1-10
  )
  out="$IMAGES/$(basename "${ref//:/-}")-$key.tar"
  if [ ! -f "$out" ]; then
    started=$(date +%s)
    echo "images: building $ref into $out" >&2
    mkdir -p "$IMAGES"
    work=$(mktemp -d "$IMAGES/.$name.XXXXXX")
    local config=()
    "${name//-/_}_image" "$work/root"
    tar --numeric-owner --sort=name -C "$work/root" -cf "$work/rootfs.tar" .
    commit "$work/rootfs.tar" "$ref" "$out" "${config[@]}"
    rm -rf --one-file-system "$work"
    work=''
    echo "images: built $ref in $(($(date +%s) - started)) s, $(du -h "$out" | cut -f1)" >&2
  fi
  archive=$out
}

# commit ROOTFS.tar REF ARCHIVE CONFIG...: a one-layer image of the tarball, written to ARCHIVE as REF.
commit() {
  local rootfs=$1 ref=$2 out=$3 image
  shift 3
  image=localhost/analytics-images-build:$$
  container=$(buildah from --quiet scratch)
  buildah add --quiet "$container" "$rootfs" / >/dev/null
  buildah config --created-by "hack/images.sh" "$@" "$container"
  committed=$image
  buildah commit --quiet --rm "$container" "$image" >/dev/null
  container=''
  export_archive "$image" "$ref" "$out"
}

# Writes IMAGE from buildah's store into the OCI archive OUT (named REF), through a .part file, and removes
# it from the store.
export_archive() { # image, ref, out
  committed=$1
  partial=$3.$$.part
  buildah push --quiet "$1" "oci-archive:$partial:$2" >&2
  buildah rmi "$1" >/dev/null
  committed=''
  mv "$partial" "$3"
  partial=''
}

services() {
  local bindir=$1 tag=$2 runtime target binary ref key out started
  local -a missing=() outs=()
  for binary in "${SERVICE_BINARY[@]}" healthcheck; do
    [ -x "$bindir/$binary" ] || { echo "images: $bindir/$binary is missing or not executable" >&2; exit 1; }
  done
  bindir=$(cd "$bindir" && pwd)
  base runtime
  runtime=$archive
  for target in command consumer query operator; do
    key=$(
      {
        declare -f services build_service
        cat Dockerfile
        printf '%s\n' "$(basename "$runtime")" "$tag"
        sha256sum <"$bindir/${SERVICE_BINARY[$target]}"
        sha256sum <"$bindir/healthcheck"
      } | sha256sum | cut -c1-10
    )
    out="$IMAGES/analytics-$target-$tag-$key.tar"
    outs+=("$out")
    [ -f "$out" ] || missing+=("$target=$out")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    started=$(date +%s)
    pulled=$(buildah pull --quiet "oci-archive:$runtime")
    work=$(mktemp -d "$IMAGES/.services.XXXXXX")
    mkdir "$work/context" # nothing of the repo is needed: the Rust stages are skipped
    for target in "${missing[@]}"; do
      build_service "${target%%=*}" "$tag" "$bindir" "${target#*=}"
    done
    rm -rf "$work"
    work=''
    echo "images: built ${#missing[@]} service image(s) in $(($(date +%s) - started)) s" >&2
  fi
  printf '%s\n' "${outs[@]}"
}

# build_service TARGET TAG BINDIR ARCHIVE
build_service() {
  local target=$1 ref bindir=$3 out=$4
  ref=$(reference "$1"):$2
  echo "images: building $ref into $out" >&2
  # The docker format takes the Dockerfile's HEALTHCHECK without a warning; the OCI archive drops it all the
  # same, and Kubernetes, which has its own probes, never reads it.
  buildah bud --quiet --format docker --pull=false --target "$target" \
    --build-arg BINARIES=prebuilt --build-context "release-binaries=$bindir" \
    --build-arg "RUNTIME_IMAGE=${REF[runtime]}" -t "$ref" -f "$PWD/Dockerfile" "$work/context" >/dev/null
  export_archive "$ref" "$ref" "$out"
}

# The reference and manifest digest an archive holds, from its index.json.
archive_image() {
  tar -xOf "$1" index.json | python3 -c 'import json, sys
manifest = json.load(sys.stdin)["manifests"][0]
print(manifest["annotations"]["org.opencontainers.image.ref.name"], manifest["digest"])'
}

load() {
  local socket=$1 archive ref digest
  shift
  for archive; do
    read -r ref digest < <(archive_image "$archive")
    if ctr -a "$socket" -n k8s.io images ls "name==$ref" | awk 'NR > 1 { print $3 }' | grep -qx "$digest"; then
      echo "images: $ref is loaded already" >&2
      continue
    fi
    ctr -a "$socket" -n k8s.io images import "$archive" >&2
  done
}

# Unpacks the one-layer image ARCHIVE into $CACHE/roots/ (once) and prints the directory.
root_of() {
  local out
  out="$CACHE/roots/$(basename "$1" .tar)"
  if [ ! -d "$out" ]; then
    mkdir -p "$CACHE/roots"
    work=$(mktemp -d "$CACHE/roots/.root.XXXXXX")
    tar -xOf "$1" "$(tar -xOf "$1" index.json | python3 -c 'import json, sys
print("blobs/" + json.load(sys.stdin)["manifests"][0]["digest"].replace(":", "/"))')" |
      python3 -c 'import json, sys
[layer] = json.load(sys.stdin)["layers"]
print("blobs/" + layer["digest"].replace(":", "/"))' | xargs -I{} tar -xOf "$1" {} |
      tar -xz --numeric-owner -C "$work"
    chmod 0755 "$work"
    mv "$work" "$out"
    work=''
  fi
  echo "$out"
}

reference() {
  if [ -n "${REF[$1]:-}" ]; then
    echo "${REF[$1]}"
  elif [ -n "${SERVICE_BINARY[$1]:-}" ]; then
    echo "$SERVICE_REGISTRY/analytics-$1"
  else
    echo "images: no image called $1: runtime, postgres, rabbitmq, pause, command, consumer, query or operator" >&2
    exit 2
  fi
}

case "${1:-}" in
bases)
  for name in runtime postgres rabbitmq pause; do
    base "$name" # not in an && list: that would switch off set -e inside it
    echo "$archive"
  done
  ;;
monitoring)
  for name in prometheus-operator config-reloader prometheus; do
    base "$name"
    echo "$archive"
  done
  ;;
ha)
  for name in cloudnative-pg rabbitmq-cluster-operator; do
    base "$name"
    echo "$archive"
  done
  ;;
rabbitmq-root)
  base rabbitmq
  root_of "$archive"
  ;;
services) services "${2:?usage: images.sh services BINDIR TAG}" "${3:?usage: images.sh services BINDIR TAG}" ;;
load) [ $# -ge 3 ] || { echo "usage: images.sh load SOCKET ARCHIVE..." >&2; exit 2; }; load "${@:2}" ;;
ref) reference "${2:?usage: images.sh ref NAME}" ;;
*) echo "usage: images.sh bases | monitoring | ha | rabbitmq-root | services BINDIR TAG | load SOCKET ARCHIVE... | ref NAME" >&2; exit 2 ;;
esac
