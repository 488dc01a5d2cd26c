//go:build tools

// Package tools makes this module require the upstream kube-apiserver main
// package, so `go build k8s.io/kubernetes/cmd/kube-apiserver` resolves with the
// versions pinned in go.mod/go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
