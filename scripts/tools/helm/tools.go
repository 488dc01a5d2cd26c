//go:build tools

// Package tools pins the upstream helm command, so `go build helm.sh/helm/v3/cmd/helm`
// resolves with the versions in go.mod/go.sum.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
