//go:build tools

// Package tools pins the upstream promtool command, so
// `go build github.com/prometheus/prometheus/cmd/promtool` resolves with go.mod/go.sum.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
