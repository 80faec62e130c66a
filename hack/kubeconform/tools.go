//go:build tools

// Package tools pins kubeconform, the validator of the chart's renders and the examples against the
// schemas of the pinned Kubernetes and of the CRDs (hack/tools.sh kube-schemas). hack/tools.sh builds
// github.com/yannh/kubeconform/cmd/kubeconform (a main package, which cannot be imported): these are the
// packages it imports, so that `go mod tidy` keeps their sums.
package tools

import (
	_ "github.com/yannh/kubeconform/pkg/config"
	_ "github.com/yannh/kubeconform/pkg/output"
	_ "github.com/yannh/kubeconform/pkg/resource"
	_ "github.com/yannh/kubeconform/pkg/validator"
)
