#!/usr/bin/env bash
# `make kind-up`: a kind cluster with the APIs on localhost:8080 and :8081, the chart, and an example
# pipeline built from this checkout. Needs docker (with a running engine), kind, kubectl, helm, skaffold.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in docker kind kubectl helm skaffold; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kind-up: missing ${missing[*]}. Install them:" >&2
  echo "  docker: https://docs.docker.com/engine/install/   kind: go install sigs.k8s.io/kind@latest" >&2
  echo "  kubectl, helm: your package manager (or hack/tools.sh helm)   skaffold: https://skaffold.dev/docs/install/" >&2
  exit 1
fi
docker info >/dev/null 2>&1 || { echo "kind-up: the docker engine is not running" >&2; exit 1; }

kind get clusters | grep -qx analytics || kind create cluster --config kind-config.yaml
kubectl config use-context kind-analytics >/dev/null
skaffold run
echo
echo "command API: http://localhost:8080   query API: http://localhost:8081   operator metrics: skaffold dev port-forwards :9090"
echo "kubectl get analyticspipelines -n analytics"
