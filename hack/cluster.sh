#!/usr/bin/env bash
# `make cluster` / `make cluster-down`: a real single-node Kubernetes on this machine, with every image built
# here from the repository. Needs root (containerd, iptables, mounts) on Linux with cgroups.
#
#   hack/cluster.sh up     idempotent: builds what is missing (cached), starts what is not running, loads the
#                          current images, and writes
#                            .run/cluster/env          sourceable: KUBECONFIG, KUBECTL, HELM, CONTAINERD_ADDRESS,
#                                                      CLUSTER_NODE_IP
#                            .run/cluster/values.yaml  chart values that point the operator's default images at
#                                                      the local ones
#   hack/cluster.sh down   stops every process by PID, unmounts what was mounted, removes the iptables chains,
#                          the bridge (and with it the cluster-IP route) and the cgroups the node made, and
#                          puts back the sysctls it changed
#
# The node: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy (iptables
# mode) from the pinned k8s.io/kubernetes module (hack/control-plane.sh build), CoreDNS from hack/coredns on
# the host behind the kube-dns Service, and a private containerd (own root, state, socket; cgroupfs, overlayfs)
# with runc and the bridge/host-local/portmap/loopback CNI plugins from Debian. Storage is a default
# StorageClass `standard` backed by a pool of hostPath volumes under .run/cluster/volumes (recycled when
# released). Images come from hack/images.sh; nothing is pulled.
#
# Pitfalls of this kernel/VM that the settings below work around (see ../shared/design/single-node-cluster):
# no CAP_SYS_RESOURCE (restrict_oom_score_adj), cgroup v1 (failCgroupV1: false), the node lifecycle controller
# must run (it lifts the not-ready taint), and the host name resolves to 127.0.0.1 (explicit --node-ip).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/pki.sh
. hack/pki.sh

ROOT=$(pwd)
DIR=$ROOT/.run/cluster
CACHE=${ANALYTICS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/analytics-pipeline}
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/24
API_SERVICE_IP=10.96.0.1
CLUSTER_DNS=10.96.0.10
BRIDGE=analytics0
VOLUMES=16
SYSCTLS="net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes"
NODE_COMPONENTS="coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd"

log() { echo "cluster: $*" >&2; }
since() { echo "$(($(date +%s) - $1)) s"; }

alive() { # pid: running and not a zombie (a zombie waits for PID 1 to reap it)
  [ -e "/proc/$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
running() { [ -f "$DIR/run/$1.pid" ] && alive "$(cat "$DIR/run/$1.pid")"; }
all_running() {
  local component
  for component in containerd $NODE_COMPONENTS; do running "$component" || return 1; done
}

wait_for() { # name (its log is DIR/logs/name.log), seconds, command...
  local name=$1 deadline=$(($(date +%s) + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name did not come up; the end of $DIR/logs/$name.log:"
      tail -n 30 "$DIR/logs/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

launch() { # name, command...
  local name=$1
  shift
  "$@" >"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/run/$name.pid"
}

# ---------------------------------------------------------------------------------------------------------
# Builds (all cached outside the repository, keyed by what defines them)

coredns_build() {
  local key out
  key=$(cat hack/coredns/go.mod hack/coredns/go.sum | sha256sum | cut -c1-10)
  out="$CACHE/coredns-$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' hack/coredns/go.mod)-$key"
  if [ ! -x "$out/coredns" ]; then
    local started tmp
    started=$(date +%s)
    tmp="$out.part.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    log "building CoreDNS into $out (about 2 minutes the first time)"
    (cd hack/coredns && CGO_ENABLED=0 GOTOOLCHAIN=auto go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" \
      github.com/coredns/coredns) >&2
    rm -rf "$out" && mv "$tmp" "$out"
    log "CoreDNS built in $(since "$started")"
  fi
  echo "$out/coredns"
}

# The release binaries the images are made of, and a tag that changes whenever they do.
release_binaries() {
  local started
  started=$(date +%s)
  log "building the release binaries"
  cargo build --release --locked -q \
    -p command-service -p consumer-service -p query-service -p analytics-kit -p analytics-operator \
    --bin command-service --bin consumer-service --bin query-service --bin healthcheck --bin operator >&2
  log "release binaries ready in $(since "$started")"
}

# ---------------------------------------------------------------------------------------------------------
# Start

certificates() {
  local pki=$DIR/pki node_ip=$1 node_name=$2
  mkdir -p "$pki"
  pki_ca "$pki" analytics-cluster-ca
  pki_cert "$pki" apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:$node_ip,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  pki_cert "$pki" admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  pki_cert "$pki" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  pki_cert "$pki" controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  pki_cert "$pki" scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  pki_cert "$pki" kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
  pki_cert "$pki" kubelet "/O=system:nodes/CN=system:node:$node_name" "extendedKeyUsage=clientAuth"
  pki_cert "$pki" kubelet-serving "/CN=$node_name" "subjectAltName=IP:$node_ip,DNS:$node_name
extendedKeyUsage=serverAuth"
  openssl genrsa -out "$pki/service-accounts.key" 2048 2>/dev/null
}

containerd_config() { # the sandbox (pause) image
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d"
  cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[grpc]
  address = "$DIR/containerd/containerd.sock"
[ttrpc]
  address = "$DIR/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  tolerate_missing_hugetlb_controller = true
  disable_apparmor = true
  # No CAP_SYS_RESOURCE in this VM: nobody may lower oom_score_adj (sandboxes ask for -998).
  restrict_oom_score_adj = true
  # Network namespaces under our state dir instead of /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$DIR/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$DIR/cni/net.d/10-analytics.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "analytics",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$DIR/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

start_node() { # bin dir, coredns binary, pause image reference
  local bin=$1 coredns=$2 pause=$3 started ports node_ip node_name server
  started=$(date +%s)
  # A node that is not (fully) running: clear what a previous run left, then start afresh.
  stop_node quiet
  rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/kubelet" "$DIR/pod-logs" "$DIR/cni" "$DIR/containerd" "$DIR/volumes"
  mkdir -p "$DIR/logs" "$DIR/run"
  mapfile -t ports < <(hack/ports.sh 12)
  local etcd_port=${ports[0]} peer_port=${ports[1]} api_port=${ports[2]} kcm_port=${ports[3]} sched_port=${ports[4]}
  local kubelet_port=${ports[5]} kubelet_healthz=${ports[6]} proxy_healthz=${ports[7]} proxy_metrics=${ports[8]}
  local dns_port=${ports[9]} dns_health=${ports[10]} dns_ready=${ports[11]}
  node_ip=$(ip -4 route get 1.1.1.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  node_name=$(hostname | tr '[:upper:]' '[:lower:]')
  server="https://127.0.0.1:$api_port"
  echo "$node_ip" >"$DIR/run/node-ip"

  # Host settings: the kubelet sets kernel.panic, panic_on_oops and vm.overcommit_memory, kube-proxy sets
  # route_localnet; `down` puts back what is saved here.
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
  local key
  [ -f "$DIR/run/sysctl.saved" ] || for key in $SYSCTLS; do
    sysctl -n "$key" >/dev/null 2>&1 && echo "$key=$(sysctl -n "$key")"
  done >"$DIR/run/sysctl.saved"
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "no br_netfilter: hairpin Service traffic may fail"
  # Cluster IPs exist only as kube-proxy's DNAT rules. A connection made before kube-proxy has the rules
  # for a new Service (it syncs about a second after a change) would otherwise follow the default route
  # off this machine, to whatever answers at that private address there, and a pooled keep-alive
  # connection would stay stuck to it. So the range routes to the pods' bridge (made here, before the CNI
  # plugin, which takes it over), where no one answers for it; the host's own connections still get their
  # DNAT (the OUTPUT chain comes after the route lookup). This kernel has no dummy links.
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip link set "$BRIDGE" up
  ip route replace "$SVC_CIDR" dev "$BRIDGE"

  containerd_config "$pause"
  launch containerd containerd --config "$DIR/containerd/config.toml"
  wait_for containerd 30 ctr -a "$DIR/containerd/containerd.sock" version

  certificates "$node_ip" "$node_name"
  local name
  for name in admin controller-manager scheduler kube-proxy kubelet; do
    pki_kubeconfig "$DIR/pki" "$name" "$server" "$DIR/$name.kubeconfig"
  done

  launch etcd "$bin/etcd" --data-dir "$DIR/etcd" --name analytics --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "analytics=http://127.0.0.1:$peer_port"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

  local pki=$DIR/pki
  # Pods reach the API at $API_SERVICE_IP, which kube-proxy forwards to the node IP.
  launch kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 0.0.0.0 --advertise-address "$node_ip" --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/service-accounts.key" \
    --service-account-signing-key-file "$pki/service-accounts.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-cluster-ip-range "$SVC_CIDR" --allow-privileged=true
  wait_for kube-apiserver 60 curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server/readyz"
  log "API server ready at +$(since "$started")"

  # nodelifecycle stays: only it lifts the not-ready taint the kubelet registers the node with.
  launch kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
    --use-service-account-credentials=true --root-ca-file "$pki/ca.crt" \
    --service-account-private-key-file "$pki/service-accounts.key" \
    --service-cluster-ip-range "$SVC_CIDR" --flex-volume-plugin-dir "$DIR/kcm-flexvolume" \
    --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller'
  launch kube-scheduler "$bin/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false

  mkdir -p "$DIR/kubelet" "$DIR/pod-logs"
  cat >"$DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
# This VM is cgroup v1: a warning in 1.33, refused by default from 1.35 on.
failCgroupV1: false
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
# The field is podLogsDir (an unknown field would be ignored silently).
podLogsDir: $DIR/pod-logs
volumePluginDir: $DIR/kubelet/volume-plugins
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS]
resolvConf: /etc/resolv.conf
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
# Images are built here and cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
EOF
  launch kubelet "$bin/kubelet" --config "$DIR/kubelet-config.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
    --root-dir "$DIR/kubelet" --cert-dir "$DIR/kubelet/pki" --node-ip "$node_ip" --hostname-override "$node_name" --v=1

  cat >"$DIR/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $node_name
clientConnection: {kubeconfig: $DIR/kube-proxy.kubeconfig}
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
# Leave the host's conntrack settings alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  launch kube-proxy "$bin/kube-proxy" --config "$DIR/kube-proxy-config.yaml" --v=1

  # Cluster DNS: CoreDNS on the node IP, behind the kube-dns Service through an EndpointSlice of our own.
  cat >"$DIR/Corefile" <<EOF
.:$dns_port {
    bind $node_ip
    errors
    health 127.0.0.1:$dns_health
    ready 127.0.0.1:$dns_ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $DIR/admin.kubeconfig analytics
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
EOF
  launch coredns "$coredns" -conf "$DIR/Corefile"
  export KUBECONFIG=$DIR/admin.kubeconfig
  "$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $CLUSTER_DNS
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: analytics-cluster}
addressType: IPv4
ports:
- {name: dns, port: $dns_port, protocol: UDP}
- {name: dns-tcp, port: $dns_port, protocol: TCP}
endpoints:
- addresses: [$node_ip]
  conditions: {ready: true}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
  wait_for coredns 60 curl -fsS "http://127.0.0.1:$dns_ready/ready"
  wait_for kubelet 120 sh -c "'$KUBECTL' get node '$node_name' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  # Pods need their namespace's ServiceAccount (the controller manager makes it a few seconds in), and
  # Services need kube-proxy's first sync.
  wait_for kube-controller-manager 60 "$KUBECTL" -n default get serviceaccount default
  wait_for kube-proxy 60 curl -fsS "http://127.0.0.1:$proxy_healthz/healthz"
  log "node $node_name ($node_ip) Ready at +$(since "$started")"
}

# hostPath volumes for the default StorageClass: a pool of $VOLUMES, each world-writable like a fresh
# cloud disk's mount point to a non-root pod. A released volume (its claim deleted) is wiped and offered again.
volumes() {
  local i name phase
  mkdir -p "$DIR/volumes"
  for i in $(seq -w 1 "$VOLUMES"); do
    name=pv-$i
    phase=$("$KUBECTL" get pv "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    case "$phase" in
    Released | Failed) "$KUBECTL" delete pv "$name" --wait >/dev/null ;;
    "") ;;
    *) continue ;;
    esac
    rm -rf "${DIR:?}/volumes/$name" && mkdir -p "$DIR/volumes/$name" && chmod 0777 "$DIR/volumes/$name"
    "$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $name, labels: {analytics.example.com/pool: local}}
spec:
  storageClassName: standard
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $DIR/volumes/$name, type: Directory}
EOF
  done
}

up() {
  local started bin coredns archives images_tag pause
  started=$(date +%s)
  hack/deps.sh cluster
  [ "$(id -u)" = 0 ] || { log "the node needs root (containerd, iptables, mounts)"; exit 1; }
  mkdir -p "$DIR/logs" "$DIR/run"
  bin=$(hack/control-plane.sh build)
  KUBECTL=$bin/kubectl
  coredns=$(coredns_build)
  HELM=$(hack/tools.sh helm)
  release_binaries
  mapfile -t archives < <(hack/images.sh bases)
  local release=${CARGO_TARGET_DIR:-target}/release
  images_tag=local-$(cat "$release"/{command-service,consumer-service,query-service,operator,healthcheck} Dockerfile |
    sha256sum | cut -c1-10)
  mapfile -t -O "${#archives[@]}" archives < <(hack/images.sh services "$release" "$images_tag")
  pause=$(hack/images.sh ref pause)

  if all_running; then
    log "the node is already running"
  else
    start_node "$bin" "$coredns" "$pause"
  fi
  export KUBECONFIG=$DIR/admin.kubeconfig
  hack/images.sh load "$DIR/containerd/containerd.sock" "${archives[@]}"
  volumes

  umask 077
  cat >"$DIR/env" <<EOF
export KUBECONFIG='$DIR/admin.kubeconfig'
export KUBECTL='$KUBECTL'
export HELM='$HELM'
export CONTAINERD_ADDRESS='$DIR/containerd/containerd.sock'
export CLUSTER_NODE_IP='$(cat "$DIR/run/node-ip")'
EOF
  umask 022
  cat >"$DIR/values.yaml" <<EOF
# Written by \`make cluster\`: the images built on this machine (hack/images.sh), already in the node's containerd.
operator:
  image: {repository: $(hack/images.sh ref operator), tag: $images_tag, pullPolicy: IfNotPresent}
images:
  command: {repository: $(hack/images.sh ref command), tag: $images_tag}
  consumer: {repository: $(hack/images.sh ref consumer), tag: $images_tag}
  query: {repository: $(hack/images.sh ref query), tag: $images_tag}
  postgres: {repository: $(hack/images.sh ref postgres | cut -d: -f1), tag: "$(hack/images.sh ref postgres | cut -d: -f2)"}
  rabbitmq: {repository: $(hack/images.sh ref rabbitmq | cut -d: -f1), tag: $(hack/images.sh ref rabbitmq | cut -d: -f2)}
EOF
  # With MONITORING=1, the Prometheus stack too (PROMETHEUS_URL in .run/cluster/env).
  if [ "${MONITORING:-}" = 1 ]; then
    hack/monitoring.sh up
  fi
  # With HA=1, the operators of the highly available modes: CloudNativePG and the RabbitMQ cluster operator.
  if [ "${HA:-}" = 1 ]; then
    hack/ha.sh up
  fi
  log "ready in $(since "$started"). Use it with:"
  cat >&2 <<EOF
  . .run/cluster/env
  \$HELM install analytics charts/analytics-pipeline -n analytics --create-namespace -f .run/cluster/values.yaml
  \$KUBECTL apply -n analytics -f examples/minimal.yaml
EOF
}

# ---------------------------------------------------------------------------------------------------------
# Stop

kill_pid_file() { # name: stops what DIR/run/name.pid names, by PID: TERM, then KILL after 10 s
  local f=$DIR/run/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

stop_node() { # [quiet]
  [ -d "$DIR" ] || return 0
  # Only a node this checkout started (running, or crashed with its pid files left): what follows is
  # host-wide (the pods' cgroups, the bridge, kube-proxy's rules) and would break another checkout's node,
  # as `make down` here once broke a test run's.
  compgen -G "$DIR/run/*.pid" >/dev/null || return 0
  local sock=$DIR/containerd/containerd.sock ipam=$DIR/cni/ipam/analytics kubectl
  kubectl=$(hack/control-plane.sh dir)/kubectl
  export KUBECONFIG=$DIR/admin.kubeconfig
  # 1. Let the kubelet tear the pods down (containerd runs CNI DEL: veth, IP address, masquerade rules).
  if running kubelet && "$kubectl" get --raw /readyz >/dev/null 2>&1; then
    "$kubectl" delete deploy,rs,sts,ds,job --all -A --wait=false >/dev/null 2>&1 || true
    "$kubectl" delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 300); do # up to 30 s for every sandbox's network to be released
      [ -z "$(find "$ipam" -maxdepth 1 -type f ! -name 'last_reserved_ip*' ! -name lock 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  local name
  for name in $NODE_COMPONENTS; do kill_pid_file "$name"; done
  local kube_proxy
  kube_proxy=$(dirname "$kubectl")/kube-proxy
  [ -x "$kube_proxy" ] && "$kube_proxy" --cleanup >"$DIR/logs/kube-proxy-cleanup.log" 2>&1 || true
  # 2. Whatever still runs in containerd (the kubelet went first, say): kill the tasks, then containerd.
  if running containerd; then
    local c
    for c in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks kill -s KILL "$c" >/dev/null 2>&1 || true
      ctr -a "$sock" -n k8s.io tasks delete "$c" >/dev/null 2>&1 || true
    done
  fi
  kill_pid_file containerd
  # 2b. After a crash: the pods' processes (every task in the kubelet's cgroups) and the shims of our containerd.
  local p
  for p in $(cat /sys/fs/cgroup/pids/kubepods/cgroup.procs \
    $(find /sys/fs/cgroup/pids/kubepods -mindepth 1 -name cgroup.procs 2>/dev/null) 2>/dev/null); do
    kill -9 "$p" 2>/dev/null || true
  done
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "-address $sock " && kill -9 "${p#/proc/}" 2>/dev/null || true
  done
  # 3. Mounts under DIR (netns, shm, rootfs, kubelet volumes), deepest first.
  local m
  for m in $(awk -v d="$DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # 4. The bridge, the CNI plugins' masquerade chains, and the kubelet's own chains (kube-proxy --cleanup
  #    leaves these).
  ip link del "$BRIDGE" 2>/dev/null || true
  local rule chain ipt table
  iptables-save -t nat | grep -- '--comment "name: \\"analytics\\"' | grep '^-A POSTROUTING' | sed 's/^-A /-D /' |
    while read -r rule; do eval "iptables -t nat $rule" 2>/dev/null || true; done || true
  for chain in $(iptables-save -t nat | grep -- '--comment "name: \\"analytics\\"' |
    awk '$1 == "-A" && $2 ~ /^CNI-/ { print $2 }' | sort -u); do
    iptables -t nat -F "$chain" 2>/dev/null && iptables -t nat -X "$chain" 2>/dev/null || true
  done
  for ipt in iptables ip6tables; do
    while $ipt -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    while $ipt -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    for table in mangle filter nat; do
      for chain in KUBE-FIREWALL KUBE-IPTABLES-HINT KUBE-KUBELET-CANARY KUBE-PROXY-CANARY KUBE-MARK-MASQ; do
        $ipt -t "$table" -F "$chain" 2>/dev/null && $ipt -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  # 5. The kubelet's cgroups, its fixed-path files, libcni's cache for sandboxes that never got a CNI DEL,
  #    and the sysctls.
  sleep 0.5 # the last shims leave their cgroups
  for m in /sys/fs/cgroup/*/kubepods; do
    [ -d "$m" ] && find "$m" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null || true
  rmdir /var/log/containers 2>/dev/null || true
  grep -l -- "$DIR/" /var/lib/cni/results/* 2>/dev/null | xargs -r rm -f || true
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
  if [ -f "$DIR/run/sysctl.saved" ]; then
    xargs -r sysctl -qw <"$DIR/run/sysctl.saved" 2>/dev/null || true
    rm -f "$DIR/run/sysctl.saved"
  fi
  [ "${1:-}" = quiet ] || log "stopped; logs are in $DIR/logs"
}

case "${1:-}" in
up) up ;;
down) stop_node ;;
*) echo "usage: cluster.sh up | down" >&2; exit 2 ;;
esac
