#!/usr/bin/env bash
# The operators a highly available pipeline stands on, on the local node (`make cluster HA=1` runs
# `hack/ha.sh up`), with their images built here from the modules pinned in hack/ (hack/images.sh ha):
# - CloudNativePG 1.30.0, from the release manifest in its Go module (releases/cnpg-1.30.0.yaml: its CRDs,
#   RBAC, the manager Deployment in cnpg-system and its webhooks). The manager makes its own CA and webhook
#   certificate and injects the CA into the webhook configurations, so no cert-manager is needed.
# - The RabbitMQ cluster operator 2.22.1, from the manifests under config/ in its Go module: the namespace
#   rabbitmq-system, the RabbitmqCluster CRD, the RBAC and the manager Deployment, with ENABLE_WEBHOOKS=false
#   and without the webhook configurations: since 2.22 its webhook needs cert-manager for its certificate.
#   The webhook only defaulted spec.image (the operator always sets it) and rejected overrides that the
#   controller strips anyway.
# Idempotent; `make cluster-down` removes them with the node.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.run/cluster
CLOUDNATIVE_PG_VERSION=v1.30.0
RABBITMQ_CLUSTER_OPERATOR_VERSION=v2.22.1
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

# The cluster operator's manifests (config/ of its module, the leaf files its kustomizations combine,
# without the webhook and cert-manager ones), with the image built here and its webhooks off.
rabbitmq_cluster_operator_manifest() {
  local src image file
  src=$(cd hack/rabbitmq-cluster-operator &&
    go mod download -json "github.com/rabbitmq/cluster-operator/v2@$RABBITMQ_CLUSTER_OPERATOR_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  image=$(hack/images.sh ref rabbitmq-cluster-operator)
  for file in namespace/base/namespace crd/bases/rabbitmq.com_rabbitmqclusters rbac/service_account rbac/role \
    rbac/role_binding rbac/leader_election_role rbac/leader_election_role_binding manager/manager; do
    echo ---
    sed -e "s|image: ghcr.io/rabbitmq/cluster-operator:latest|image: $image\n        imagePullPolicy: IfNotPresent|" \
      -e 's|^\( *\)- name: OPERATOR_NAMESPACE$|\1- name: ENABLE_WEBHOOKS\n\1  value: "false"\n&|' \
      "$src/config/$file.yaml"
  done
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
  rabbitmq_cluster_operator_manifest | "$KUBECTL" apply --server-side --force-conflicts -f - >/dev/null
  "$KUBECTL" -n rabbitmq-system rollout status deploy/rabbitmq-cluster-operator --timeout=300s >/dev/null
  log "the RabbitMQ cluster operator $RABBITMQ_CLUSTER_OPERATOR_VERSION ready in $(($(date +%s) - started)) s"
}

case "${1:-}" in
up) up ;;
manifest) cloudnative_pg_manifest && rabbitmq_cluster_operator_manifest ;;
*) echo "usage: ha.sh up | manifest" >&2; exit 2 ;;
esac
