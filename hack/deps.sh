#!/usr/bin/env bash
# Makes sure the programs `make up` and `make test` run are installed. As root on Debian or Ubuntu it
# installs what is missing with apt-get (without starting the distribution's own services); otherwise it
# says exactly what to install and fails.
#   hack/deps.sh           what `make up` and `make test` need; the broker is the rabbitmq image's RabbitMQ
#                          (hack/rabbitmq.sh), which mmdebstrap and buildah build
#   hack/deps.sh cluster   and what `make cluster` needs: containerd, runc, the CNI plugins and iptables
set -euo pipefail

missing_pkgs=()
have_initdb() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_initdb || missing_pkgs+=(postgresql)
command -v mmdebstrap >/dev/null || missing_pkgs+=(mmdebstrap)
command -v buildah >/dev/null || missing_pkgs+=(buildah)
command -v unshare >/dev/null || missing_pkgs+=(util-linux)
command -v psql >/dev/null || missing_pkgs+=(postgresql-client)
command -v curl >/dev/null || missing_pkgs+=(curl)
command -v python3 >/dev/null || missing_pkgs+=(python3)
command -v openssl >/dev/null || missing_pkgs+=(openssl)       # the test control plane's CA and certificates
command -v promtool >/dev/null || missing_pkgs+=(prometheus)   # promtool checks the chart's alert rules
if [ "${1:-}" = cluster ]; then
  command -v containerd >/dev/null || missing_pkgs+=(containerd)
  command -v runc >/dev/null || missing_pkgs+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing_pkgs+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing_pkgs+=(iptables)
  command -v ip >/dev/null || missing_pkgs+=(iproute2)
fi

if [ ${#missing_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && grep -qiE 'debian|ubuntu' /etc/os-release; then
    echo "deps: installing ${missing_pkgs[*]} with apt-get" >&2
    # Keep the packages' init scripts from starting system-wide services we do not use.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
  else
    echo "deps: missing ${missing_pkgs[*]}." >&2
    echo "      On Debian or Ubuntu: sudo apt-get install ${missing_pkgs[*]}" >&2
    echo "      Elsewhere: install PostgreSQL 15+ server binaries, mmdebstrap and buildah (they build the broker's" >&2
    echo "      Debian root) and promtool; for make cluster also containerd 1.6+, runc, the CNI plugins and iptables." >&2
    exit 1
  fi
fi

command -v cargo >/dev/null || { echo "deps: cargo is missing; install Rust (https://rustup.rs), 1.94 or newer" >&2; exit 1; }
