//go:build tools

// Package tools pins the two clients gitops-verdict runs: Flux's kstatus (sigs.k8s.io/cli-utils)
// and the Lua VM Argo CD runs health scripts in (github.com/yuin/gopher-lua).
package tools

import (
	_ "github.com/yuin/gopher-lua"
	_ "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)
