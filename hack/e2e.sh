#!/usr/bin/env bash
# `make e2e`: the user's path on a real node (operator/tests/e2e): `make cluster` (idempotent), then helm
# install, the example pipeline, the walkthrough, scaling, chaos, a rollout under load, the read model's
# verify and rebuild, and Retain. With
# MONITORING=1, the Prometheus stack too, and the checks of the chart's monitors, dashboard and alerts on it.
# With HA=1 (`make cluster HA=1`: CloudNativePG and the RabbitMQ cluster operator), the highly available
# pipeline too: examples/ha.yaml through a switchover, failovers and a killed postmaster under keyed load,
# standby reads, and Retain.
# A node this script started is stopped again at the end, pass or fail; one that was running is left running
# (its e2e namespaces are removed at the start of the next run).
set -euo pipefail
cd "$(dirname "$0")/.."

was_running=
[ -f .run/cluster/run/kube-apiserver.pid ] && kill -0 "$(cat .run/cluster/run/kube-apiserver.pid)" 2>/dev/null &&
  was_running=1
started=$(date +%s)
cleanup() {
  [ -n "$was_running" ] || hack/cluster.sh down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

hack/cluster.sh up
echo "e2e: make cluster took $(($(date +%s) - started)) s"
# shellcheck source=/dev/null
. .run/cluster/env

# The Prometheus checks (operator/tests/e2e/monitoring.rs) need the stack that MONITORING=1 brings up, and
# the highly available pipeline (operator/tests/e2e/ha.rs) the CloudNativePG that HA=1 brings up. The tests
# run one at a time: each installs an operator that watches every namespace. One test alone, on a node that
# runs already: cargo test -p analytics-operator --test e2e -- --nocapture ha::
filter=()
if [ "${MONITORING:-}" != 1 ]; then
  filter+=(--skip monitoring::)
  echo "e2e: without the Prometheus checks (make e2e MONITORING=1 runs them)"
fi
if [ "${HA:-}" != 1 ]; then
  filter+=(--skip ha::)
  echo "e2e: without the highly available pipeline (make e2e HA=1 runs it)"
fi
log=$(mktemp "${TMPDIR:-/tmp}/analytics-e2e.XXXXXX")
status=0
cargo test --locked -p analytics-operator --test e2e -- --nocapture --test-threads=1 "${filter[@]}" 2>&1 |
  tee "$log" || status=$?

# The whole node's memory: its processes, and the pods' cgroup.
node_kib=0
for name in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns; do
  pid=$(cat ".run/cluster/run/$name.pid" 2>/dev/null) || continue
  node_kib=$((node_kib + $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)))
done
pods_bytes=$(cat /sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes 2>/dev/null || echo 0)
echo "e2e: memory: node processes $((node_kib / 1024)) MiB RSS, pods $((pods_bytes / 1048576)) MiB (kubepods cgroup, page cache included)"

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "e2e: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
if [ "$status" != 0 ]; then
  echo "e2e: failed; what the node shows:" >&2
  "$KUBECTL" get pods,pvc -A -o wide >&2 || true
  "$KUBECTL" get analyticspipelines -A -o yaml >&2 || true
  "$KUBECTL" get events -A --sort-by=.lastTimestamp >&2 2>&1 | tail -n 40 >&2 || true
  "$KUBECTL" logs -n e2e -l app.kubernetes.io/name=analytics-operator --tail=60 --prefix >&2 || true
  echo "e2e: the node's logs: .run/cluster/logs/ (pods: .run/cluster/pod-logs/)" >&2
fi
exit "$status"
