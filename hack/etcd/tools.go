//go:build tools

// Package tools pins etcd for the control plane the operator's tests run against.
package tools

import _ "go.etcd.io/etcd/server/v3/etcdmain"
