#!/usr/bin/env bash
# `make e2e`: the user's path on a real node (operator/tests/e2e): `make cluster` (idempotent), then helm
# install, the example pipeline, the walkthrough, scaling, chaos, a rollout under load, the read model's
# verify and rebuild, and Retain. With
# MONITORING=1, the Prometheus stack too, and the checks of the chart's monitors, dashboard and alerts on it.
# With HA=1 (`make cluster HA=1`: CloudNativePG and the RabbitMQ cluster operator), the highly available
# pipeline too: examples/ha.yaml through a switchover, failovers and a killed postmaster under keyed load,
# standby reads, the broker's nodes deleted and restarted, and Retain.
# A node this script started is stopped again at the end, pass or fail; one that was running is left running
# (its e2e namespaces are removed at the start of the next run). A failed run leaves a report in
# ${TMPDIR:-/tmp}/analytics-e2e-failed-*: the tests' output, the node's objects and events, every log.
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
# Every wait in the tests is bounded; this bounds the whole run too (the user's path and the highly
# available pipeline take about 15 minutes), so that a hang ends with the report below, not a CI timeout.
timeout --kill-after=30s "${E2E_TIMEOUT:-40m}" \
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
if [ "$status" != 0 ]; then
  # Kept after the run (and the checkout) is gone: the test's output, what the node showed, the node's
  # logs and every pod's (the operators' too).
  report="${TMPDIR:-/tmp}/analytics-e2e-failed-$(date +%Y%m%dT%H%M%S)"
  mkdir -p "$report"
  mv "$log" "$report/e2e.log"
  {
    "$KUBECTL" get pods,pvc -A -o wide
    "$KUBECTL" get analyticspipelines -A -o yaml
    "$KUBECTL" get clusters.postgresql.cnpg.io,rabbitmqclusters.rabbitmq.com -A -o yaml
    "$KUBECTL" get events -A --sort-by=.lastTimestamp
  } >"$report/node.txt" 2>&1 || true
  cp -r .run/cluster/logs .run/cluster/pod-logs "$report/" 2>/dev/null || true
  echo "e2e: failed (exit $status); the last events, then each failure:" >&2
  tail -n 15 "$report/node.txt" >&2 # the events come last
  # The panics' messages, without the backtraces: the last lines a truncated log shows.
  grep -A3 "panicked at" "$report/e2e.log" | grep -v -E '^ +[0-9]+: |^ +at ' >&2 || true
  [ "$status" != 124 ] || echo "e2e: the run did not end within ${E2E_TIMEOUT:-40m}" >&2
  df -h . "${TMPDIR:-/tmp}" | sed 's/^/e2e: disk: /' >&2
  echo "e2e: the whole report: $report" >&2
else
  rm -f "$log"
fi
exit "$status"
