#!/usr/bin/env bash
# A private Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager on
# loopback, on free ports, with a CA and credentials generated for this run. No kubelet, no scheduler:
# pods stay unscheduled, and tests that need "available" children set pod status themselves.
#
#   hack/control-plane.sh build       builds the binaries from the Go module proxy (once per pin) and prints
#                                     their directory: etcd, kube-apiserver, kube-controller-manager, and for
#                                     `make cluster` (hack/cluster.sh) kube-scheduler, kubelet, kube-proxy and kubectl
#   hack/control-plane.sh dir         prints that directory without building
#   hack/control-plane.sh start DIR   starts the control plane in DIR and writes DIR/admin.kubeconfig,
#                                     DIR/audit.log (every write, as JSON lines) and DIR/*.pid
#   hack/control-plane.sh stop DIR    stops what start started, by PID
#
# The pins are hack/kube/go.mod (k8s.io/kubernetes, with every staging module replaced) and hack/etcd/go.mod.
# The cache key is a hash of those files and of the build flags, so a new pin means a new build.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/pki.sh
. hack/pki.sh

CACHE=${ANALYTICS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/analytics-pipeline}

pinned() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"; }

bin_dir() {
  local kube etcd key
  kube=$(pinned k8s.io/kubernetes hack/kube/go.mod)
  etcd=$(pinned go.etcd.io/etcd/server/v3 hack/etcd/go.mod)
  key=$(cat hack/kube/go.mod hack/kube/go.sum hack/etcd/go.mod hack/etcd/go.sum <(ldflags "$kube") | sha256sum | cut -c1-10)
  echo "$CACHE/control-plane-kube-$kube-etcd-$etcd-$key"
}

# Without these the binaries report v0.0.0, and helm refuses the chart's kubeVersion constraint.
ldflags() {
  local v=$1 minor
  minor=$(echo "$v" | cut -d. -f2)
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1" \
    "-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
}

build() {
  local out kube tmp started
  out=$(bin_dir)
  if [ -x "$out/etcd" ] && [ -x "$out/kubectl" ]; then # the last two to be built
    echo "$out"
    return
  fi
  local go_found go_minor
  go_found=$(go env GOVERSION 2>/dev/null || echo "no go on PATH")
  go_minor=$(echo "$go_found" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
  if [ -z "$go_minor" ] || [ "$go_minor" -lt 21 ]; then
    echo "control-plane: building kube-apiserver and etcd needs Go 1.21 or newer (found: $go_found)." \
      "Install it from https://go.dev/dl/ (Debian 13's golang-go will do; Debian 12's is too old);" \
      "Go then fetches the exact toolchain the pins need from the module proxy." >&2
    exit 1
  fi
  kube=$(pinned k8s.io/kubernetes hack/kube/go.mod)
  tmp="$out.part.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  trap 'rm -rf "${tmp:-}"' EXIT
  started=$(date +%s)
  echo "control-plane: building the Kubernetes $kube binaries and etcd into $out;" \
    "this takes about 7 minutes on 2 cores the first time" >&2
  (cd hack/kube && CGO_ENABLED=0 GOTOOLCHAIN=auto go build -trimpath -ldflags "$(ldflags "$kube")" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubectl) >&2
  (cd hack/etcd && CGO_ENABLED=0 GOTOOLCHAIN=auto go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" \
    go.etcd.io/etcd/server/v3) >&2
  rm -rf "$out" && mv "$tmp" "$out"
  trap - EXIT
  echo "control-plane: built in $(($(date +%s) - started)) s" >&2
  echo "$out"
}

wait_for() { # name (its log is DIR/name.log), seconds, command...
  local name=$1 deadline=$(($(date +%s) + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "control-plane: $name did not come up; the end of $dir/$name.log:" >&2
      tail -n 20 "$dir/$name.log" >&2
      return 1
    fi
    sleep 0.2
  done
}

start() {
  local bin ports etcd_port peer_port api_port kcm_port server
  bin=$(build)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  pki="$dir/pki"
  mkdir -p "$pki"
  mapfile -t ports < <(hack/ports.sh 4)
  etcd_port=${ports[0]} peer_port=${ports[1]} api_port=${ports[2]} kcm_port=${ports[3]}
  server="https://127.0.0.1:$api_port"

  pki_ca "$pki" analytics-test-ca
  pki_cert "$pki" apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
  pki_cert "$pki" admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  pki_cert "$pki" controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$pki/service-accounts.key" 2048 2>/dev/null
  cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
EOF

  "$bin/etcd" --data-dir "$dir/etcd" --name test --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "test=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

  "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/service-accounts.key" \
    --service-account-signing-key-file "$pki/service-accounts.key" \
    --authorization-mode Node,RBAC --service-cluster-ip-range 10.0.0.0/24 \
    --audit-log-path "$dir/audit.log" --audit-policy-file "$dir/audit-policy.yaml" \
    >"$dir/kube-apiserver.log" 2>&1 &
  echo $! >"$dir/kube-apiserver.pid"
  pki_kubeconfig "$pki" admin "$server" "$dir/admin.kubeconfig"
  pki_kubeconfig "$pki" controller-manager "$server" "$dir/controller-manager.kubeconfig"
  wait_for kube-apiserver 60 curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server/readyz"

  # Deployments get ReplicaSets and pods, StatefulSets get pods and claims, owners' deletion cascades, and
  # every namespace gets its default ServiceAccount. No cloud, no node lifecycle.
  "$bin/kube-controller-manager" --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
    --use-service-account-credentials=true --root-ca-file "$pki/ca.crt" \
    --service-account-private-key-file "$pki/service-accounts.key" \
    --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    >"$dir/kube-controller-manager.log" 2>&1 &
  echo $! >"$dir/kube-controller-manager.pid"
  wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
  echo "control-plane: up at $server (kubeconfig $dir/admin.kubeconfig)" >&2
}

stop() {
  local name pid
  for name in kube-controller-manager kube-apiserver etcd; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid"
  done
}

case "${1:-}" in
build) build ;;
dir) bin_dir ;;
start) dir=${2:?usage: control-plane.sh start DIR}; start ;;
stop) dir=${2:?usage: control-plane.sh stop DIR}; stop ;;
*) echo "usage: control-plane.sh build | dir | start DIR | stop DIR" >&2; exit 2 ;;
esac
