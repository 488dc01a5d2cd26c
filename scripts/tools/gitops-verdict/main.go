// Command gitops-verdict prints what two GitOps clients say about one Kubernetes object: Flux's
// kstatus (sigs.k8s.io/cli-utils status.Compute, as Flux health checks compute it) and an Argo CD
// health script run under gopher-lua the way Argo CD runs it (base, table, string and math
// libraries; the object as the global `obj`; the returned table's status and message).
//
//	gitops-verdict HEALTH_LUA < object.json
//
// Prints one JSON object: {"kstatus", "kstatusMessage", "argocd", "argocdMessage"}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kstatus        string `json:"kstatus"`
	KstatusMessage string `json:"kstatusMessage"`
	Argocd         string `json:"argocd"`
	ArgocdMessage  string `json:"argocdMessage"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gitops-verdict HEALTH_LUA < object.json")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gitops-verdict:", err)
		os.Exit(1)
	}
}

func run(scriptPath string, in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(io.LimitReader(in, 16<<20))
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("object: %w", err)
	}
	result, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("kstatus: %w", err)
	}
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return err
	}
	health, message, err := argocdHealth(string(script), u.Object)
	if err != nil {
		return fmt.Errorf("argocd health: %w", err)
	}
	return json.NewEncoder(out).Encode(verdict{
		Kstatus:        result.Status.String(),
		KstatusMessage: result.Message,
		Argocd:         health,
		ArgocdMessage:  message,
	})
}

// argocdHealth runs a health script as Argo CD's util/lua VM does.
func argocdHealth(script string, obj map[string]interface{}) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", decode(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	return lua.LVAsString(table.RawGetString("status")), lua.LVAsString(table.RawGetString("message")), nil
}

// decode converts a JSON value to Lua as Argo CD's decodeValue does.
func decode(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []interface{}:
		t := l.NewTable()
		for _, item := range v {
			t.Append(decode(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.NewTable()
		for key, item := range v {
			t.RawSetString(key, decode(l, item))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
