#!/usr/bin/env bash
# `make test`: formatting, lints, then every test against a private PostgreSQL, RabbitMQ and Kubernetes
# control plane (etcd, kube-apiserver, kube-controller-manager) that live only for this run, on free
# ports, and are stopped afterwards whatever happens; then `make e2e HA=1` on a real node (hack/e2e.sh:
# the user's path and the highly available pipeline on CloudNativePG).
# Arguments go to cargo test instead of --workspace, e.g. `hack/test.sh -p consumer-service pipeline`.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/deps.sh
# A fresh run writes about 15 GiB (target/, .run/ and ~/.cache/analytics-pipeline); a full disk fails it in
# ways that look like anything else (a pod that never starts, a compiler error), so say so first.
avail=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
[ "$avail" -ge 15 ] || echo "make test: WARNING: only $avail GiB free on $(df -P . | awk 'NR == 2 { print $6 }'); a fresh run needs about 15 GiB" >&2
# The broker of every test: the rabbitmq image's RabbitMQ 4.3, built once (about a minute), unpacked, cached.
export RABBITMQ_ROOT; RABBITMQ_ROOT=$(hack/images.sh rabbitmq-root)
# Built once per pin (about 6 minutes the first time), then reused from the cache.
hack/control-plane.sh build >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -q -- -D warnings
# The end-to-end test is not a default test target (only `make e2e` runs it); lint it too.
cargo clippy --locked -q -p analytics-operator --test e2e -- -D warnings
# Licenses, duplicate crates and sources of the dependency graph (deny.toml). The advisory database
# cannot be fetched here; `cargo deny check advisories` is for machines with network access.
"$(hack/tools.sh cargo-deny)" check licenses bans sources

dir=$(mktemp -d "${TMPDIR:-/tmp}/analytics-test.XXXXXX")
chmod 755 "$dir" # the postgres user must reach its data directory inside
stop_private() {
  hack/control-plane.sh stop "$dir/kube" || true
  hack/rabbitmq.sh stop "$dir/rabbitmq" || true
  hack/postgres.sh stop "$dir/postgres" || true
}
trap 'stop_private; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

mapfile -t ports < <(hack/ports.sh 4)
pg_port=${ports[0]} amqp_port=${ports[1]} dist_port=${ports[2]} epmd_port=${ports[3]}
# Durability is not under test here; speed is welcome.
PG_OPTS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" hack/postgres.sh start "$dir/postgres" "$pg_port"
hack/rabbitmq.sh start "$dir/rabbitmq" "$amqp_port" "$dist_port" "$epmd_port"
hack/control-plane.sh start "$dir/kube"

export TEST_DATABASE_URL; TEST_DATABASE_URL=$(cat "$dir/postgres/url")
# The chart and image checks use a real helm, promtool and hadolint.
export HELM; HELM=$(hack/tools.sh helm)
export KUBECTL; KUBECTL=$(hack/tools.sh kubectl)
export TEST_KUBECONFIG="$dir/kube/admin.kubeconfig" TEST_KUBE_AUDIT_LOG="$dir/kube/audit.log"
export PROMETHEUS_OPERATOR_CRDS; PROMETHEUS_OPERATOR_CRDS=$(hack/tools.sh prometheus-crds)
export HA_CRDS; HA_CRDS=$(hack/tools.sh ha-crds)
export PROMTOOL; PROMTOOL=$(hack/tools.sh promtool)
export HADOLINT; HADOLINT=$(hack/tools.sh hadolint)
# Strict schema checks of every render and every object the operator creates (kubeconform, against schemas
# generated from the pinned Kubernetes and the CRDs), and kube-score's workload checks.
export KUBECONFORM; KUBECONFORM=$(hack/tools.sh kubeconform)
export KUBE_SCORE; KUBE_SCORE=$(hack/tools.sh kube-score)
export KUBE_SCHEMAS; KUBE_SCHEMAS=$(hack/tools.sh kube-schemas)
export CRD_SCHEMAS; CRD_SCHEMAS=$(hack/tools.sh crd-schemas)
# The API contract check: openapi-spec-validator and schemathesis over each service's OpenAPI document.
export API_CONTRACT_TOOLS; API_CONTRACT_TOOLS=$(hack/tools.sh api-contract)
export TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$amqp_port/%2f"
log="$dir/cargo-test.log"
# Every test binary runs even after one fails, so that a run reports all its failures.
status=0
cargo test --locked --no-fail-fast "${@:---workspace}" 2>&1 | tee "$log" || status=$?
# The private instances are done with: the node gets the machine to itself.
stop_private
# The user's path on a real node (`make e2e`), for the whole suite only: it needs root (containerd, iptables).
if [ $# -eq 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # With the highly available pipeline (CloudNativePG) too.
    HA=1 hack/e2e.sh 2>&1 | tee -a "$log" || status=$?
  else
    echo "make test: the end-to-end test needs root (containerd, iptables, mounts) and did not run: sudo make e2e" >&2
  fi
fi
# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test "0 passed").
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
