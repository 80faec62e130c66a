//go:build tools

// Package tools pins the Prometheus operator and its config reloader, which `make cluster MONITORING=1`
// runs in the cluster as kube-prometheus-stack does (hack/monitoring.sh builds them into local images).
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
)
