//go:build tools

// Package tools pins the Kubernetes binaries the project runs: the control plane the operator's tests run
// against, and the node (kubelet, kube-scheduler, kube-proxy) and kubectl of `make cluster`.
package tools

import (
	_ "k8s.io/kubectl/pkg/cmd" // k8s.io/kubernetes/cmd/kubectl
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
