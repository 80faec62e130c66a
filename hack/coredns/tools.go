//go:build tools

// Package tools pins CoreDNS, the cluster DNS of `make cluster` (hack/cluster.sh runs it on the host with
// its kubernetes plugin).
package tools

import _ "github.com/coredns/coredns/core/plugin"
