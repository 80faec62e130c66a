//go:build tools

// Package tools pins kube-score, the static check of the chart's renders against Kubernetes best
// practices (probes, resources, security contexts, network policies, disruption budgets). hack/tools.sh
// builds github.com/zegl/kube-score/cmd/kube-score (a main package, which cannot be imported): these are
// the packages it imports, so that `go mod tidy` keeps their sums.
package tools

import (
	_ "github.com/mattn/go-isatty"
	_ "github.com/spf13/pflag"
	_ "github.com/zegl/kube-score/parser"
	_ "github.com/zegl/kube-score/renderer/ci"
	_ "github.com/zegl/kube-score/renderer/human"
	_ "github.com/zegl/kube-score/renderer/json_v2"
	_ "github.com/zegl/kube-score/renderer/junit"
	_ "github.com/zegl/kube-score/renderer/sarif"
	_ "github.com/zegl/kube-score/score"
	_ "golang.org/x/term"
)
