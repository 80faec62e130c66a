//go:build tools

// Package tools pins helm, the one the chart's tests and `make cluster` use. hack/tools.sh builds
// helm.sh/helm/v3/cmd/helm (a main package, which cannot be imported): these are the packages it needs
// beyond helm's libraries, so that `go mod tidy` keeps their sums.
package tools

import (
	_ "github.com/Masterminds/vcs"
	_ "github.com/gofrs/flock"
	_ "github.com/spf13/cobra/doc"
	_ "helm.sh/helm/v3/pkg/action"
)
