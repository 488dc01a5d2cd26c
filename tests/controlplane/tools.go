//go:build tools

// Package tools makes this module require the upstream kube-apiserver and
// kube-controller-manager main packages, so `go build k8s.io/kubernetes/cmd/...`
// resolves with the versions pinned in go.mod/go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
