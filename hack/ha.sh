#!/usr/bin/env bash
# The operators a highly available pipeline stands on, on the local node (`make cluster HA=1` runs
# `hack/ha.sh up`): CloudNativePG 1.30.0, installed from the release manifest in its Go module
# (releases/cnpg-1.30.0.yaml: its CRDs, RBAC, the manager Deployment in cnpg-system and its webhooks), with
# the manager image built here from the module pinned in hack/cnpg (hack/images.sh ha). The manager makes
# its own CA and webhook certificate and injects the CA into the webhook configurations, so no
# cert-manager is needed. Idempotent; `make cluster-down` removes it with the node.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.run/cluster
CLOUDNATIVE_PG_VERSION=v1.30.0
log() { echo "ha: $*" >&2; }

# The release manifest with the image built here, which the node must never try to pull.
cloudnative_pg_manifest() {
  local src image
  src=$(cd hack/cnpg && go mod download -json "github.com/cloudnative-pg/cloudnative-pg@$CLOUDNATIVE_PG_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  image=$(hack/images.sh ref cloudnative-pg)
  sed -e "s|ghcr.io/cloudnative-pg/cloudnative-pg:${CLOUDNATIVE_PG_VERSION#v}|$image|g" \
    -e 's|imagePullPolicy: Always|imagePullPolicy: IfNotPresent|' "$src/releases/cnpg-${CLOUDNATIVE_PG_VERSION#v}.yaml"
}

up() {
  [ -f "$DIR/env" ] || { log "no node: run make cluster first"; exit 1; }
  # shellcheck source=/dev/null
  . "$DIR/env"
  local started archives
  started=$(date +%s)
  mapfile -t archives < <(hack/images.sh ha)
  hack/images.sh load "$CONTAINERD_ADDRESS" "${archives[@]}"
  cloudnative_pg_manifest | "$KUBECTL" apply --server-side --force-conflicts -f - >/dev/null
  "$KUBECTL" -n cnpg-system rollout status deploy/cnpg-controller-manager --timeout=300s >/dev/null
  # The API server must reach the webhook Service (a cluster IP, through kube-proxy on the host), and the
  # manager must have injected its CA: a server-side dry run of a Cluster passes both webhooks.
  local probe='{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
    "metadata": {"name": "webhook-probe", "namespace": "default"}, "spec": {"instances": 1, "storage": {"size": "1Gi"}}}'
  for _ in $(seq 120); do
    echo "$probe" | "$KUBECTL" apply --dry-run=server -f - >/dev/null 2>&1 && break
    sleep 1
  done
  echo "$probe" | "$KUBECTL" apply --dry-run=server -f - >/dev/null ||
    { log "the API server cannot call CloudNativePG's webhooks"; exit 1; }
  log "CloudNativePG $CLOUDNATIVE_PG_VERSION ready (webhooks answer) in $(($(date +%s) - started)) s"
}

case "${1:-}" in
up) up ;;
manifest) cloudnative_pg_manifest ;;
*) echo "usage: ha.sh up | manifest" >&2; exit 2 ;;
esac
