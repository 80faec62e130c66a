//go:build tools

// Package tools pins Prometheus, which `make cluster MONITORING=1` runs in the cluster under the
// Prometheus operator. v0.305.0 is the module version of Prometheus v3.5.0 (the same commit), the
// version operator v0.85.0 defaults to.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
