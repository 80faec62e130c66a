#!/usr/bin/env bash
# The Prometheus stack on the local node (`make cluster MONITORING=1` runs `hack/monitoring.sh up`), run as
# kube-prometheus-stack runs it: the Prometheus operator and a `Prometheus` whose selectors pick up every
# ServiceMonitor, PodMonitor and PrometheusRule (hack/monitoring/stack.yaml). The three images are built
# here from their pinned Go modules (hack/images.sh monitoring); the operator's CRDs come from its Go
# module, the same version. Prometheus answers on the node's port 30090: .run/cluster/env gets
# PROMETHEUS_URL. Idempotent; `make cluster-down` removes it with the node.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.run/cluster
PROMETHEUS_OPERATOR_VERSION=v0.85.0
log() { echo "monitoring: $*" >&2; }

up() {
  [ -f "$DIR/env" ] || { log "no node: run make cluster first"; exit 1; }
  # shellcheck source=/dev/null
  . "$DIR/env"
  local started archives src
  started=$(date +%s)
  mapfile -t archives < <(hack/images.sh monitoring)
  hack/images.sh load "$CONTAINERD_ADDRESS" "${archives[@]}"

  # Every CRD the operator watches unconditionally; the Prometheus one is too large for a client-side apply.
  src=$(cd hack/prometheus-operator && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  for kind in prometheuses servicemonitors podmonitors probes prometheusrules; do
    "$KUBECTL" apply --server-side --force-conflicts -f "$src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" >/dev/null
  done
  "$KUBECTL" wait --for condition=established --timeout=60s \
    crd/prometheuses.monitoring.coreos.com crd/servicemonitors.monitoring.coreos.com \
    crd/podmonitors.monitoring.coreos.com crd/probes.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com >/dev/null

  sed -e "s|IMAGE_OPERATOR|$(hack/images.sh ref prometheus-operator)|" \
    -e "s|IMAGE_RELOADER|$(hack/images.sh ref config-reloader)|" \
    -e "s|IMAGE_PROMETHEUS|$(hack/images.sh ref prometheus)|" hack/monitoring/stack.yaml |
    "$KUBECTL" apply --server-side --force-conflicts -f - >/dev/null
  "$KUBECTL" -n monitoring rollout status deploy/prometheus-operator --timeout=120s >/dev/null
  # The operator makes the StatefulSet; wait for it, then for its pod.
  for _ in $(seq 120); do
    "$KUBECTL" -n monitoring get statefulset prometheus-analytics >/dev/null 2>&1 && break
    sleep 1
  done
  "$KUBECTL" -n monitoring rollout status statefulset/prometheus-analytics --timeout=180s >/dev/null

  local url=http://127.0.0.1:30090
  for _ in $(seq 60); do
    curl -fsS "$url/-/ready" >/dev/null 2>&1 && break
    sleep 1
  done
  curl -fsS "$url/-/ready" >/dev/null || { log "Prometheus does not answer on $url"; exit 1; }
  grep -q '^export PROMETHEUS_URL=' "$DIR/env" || echo "export PROMETHEUS_URL='$url'" >>"$DIR/env"
  log "Prometheus ready on $url in $(($(date +%s) - started)) s"
}

case "${1:-}" in
up) up ;;
*) echo "usage: monitoring.sh up" >&2; exit 2 ;;
esac
