// Package argocd holds the Argo CD health checks for Formations and Cells:
// Lua scripts, kept in formation_health.lua and cell_health.lua, that
// argocd-cm-patch.yaml installs into Argo CD's argocd-cm ConfigMap.
//
// Assess runs a script the way Argo CD runs a health check from argocd-cm, so
// that the tests hold the scripts to the status the operator writes.
package argocd

import (
	"context"
	_ "embed" // the Lua scripts
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// FormationHealth is the health check for cellos.dev/v1 Formation.
//
//go:embed formation_health.lua
var FormationHealth string

// CellHealth is the health check for cellos.dev/v1 Cell.
//
//go:embed cell_health.lua
var CellHealth string

// Scripts are the health checks by kind.
var Scripts = map[string]string{"Formation": FormationHealth, "Cell": CellHealth}

// ScriptFiles are the files the scripts are kept in, by kind.
var ScriptFiles = map[string]string{"Formation": "formation_health.lua", "Cell": "cell_health.lua"}

// ConfigMapKey is the argocd-cm key under which Argo CD looks for the health
// check of a cellos.dev kind.
func ConfigMapKey(kind string) string {
	return "resource.customizations.health.cellos.dev_" + kind
}

// Health is what Argo CD shows for a resource: one of Healthy, Progressing,
// Degraded, Suspended, Missing or Unknown, and a message.
type Health struct {
	Status  string
	Message string
}

// The health statuses Argo CD accepts from a script; any other is shown as
// Unknown.
var validStatus = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

// Assess runs a health check script on obj, an object as the API server
// returns it (unstructured), as Argo CD does for a script from argocd-cm: in
// a fresh interpreter with only the base, package and table libraries (no
// string, math or io), obj as a global table, within a second, and the
// script's return value read as a table of status and message.
//
// Argo CD also opens a restricted os library, which these scripts do not
// use; a script that did would fail here.
func Assess(script string, obj map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Health{}, fmt.Errorf("opening the Lua library %q: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	var h Health
	for field, dst := range map[string]*string{"status": &h.Status, "message": &h.Message} {
		switch v := ret.RawGetString(field).(type) {
		case lua.LString:
			*dst = string(v)
		case *lua.LNilType:
		default:
			return Health{}, fmt.Errorf("the script returned a %s as %s, not a string", v.Type(), field)
		}
	}
	if !validStatus[h.Status] {
		return Health{}, fmt.Errorf("the script returned the health status %q, which Argo CD shows as Unknown", h.Status)
	}
	return h, nil
}

// ResourceHealth is the health Argo CD shows for a cellos.dev object with
// these checks installed: Progressing with "Pending deletion" while it is
// being deleted (Argo CD decides that before it runs any script), else what
// the script of its kind returns.
func ResourceHealth(obj map[string]any) (Health, error) {
	if md, ok := obj["metadata"].(map[string]any); ok && md["deletionTimestamp"] != nil {
		return Health{Status: "Progressing", Message: "Pending deletion"}, nil
	}
	kind, _ := obj["kind"].(string)
	script, ok := Scripts[kind]
	if !ok {
		return Health{}, fmt.Errorf("no health check for kind %q", kind)
	}
	return Assess(script, obj)
}

// toLua converts a value of an unstructured object to Lua as Argo CD does:
// maps become tables, slices become arrays, numbers become numbers.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetString(key, toLua(l, item))
		}
		return t
	default:
		return lua.LNil
	}
}

// ConfigMapPatch renders argocd-cm-patch.yaml: a patch of Argo CD's argocd-cm
// ConfigMap that adds both health checks, each script as it is in its file.
func ConfigMapPatch() []byte {
	var b strings.Builder
	b.WriteString(`# Argo CD health checks for cellos.dev Formations and Cells.
# Generated from formation_health.lua and cell_health.lua by
#   (cd config/argocd && go test -run TestConfigMapPatch -update)
# Edit the .lua files, not this file. Merge it into argocd-cm:
#   kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm-patch.yaml
# or list it under patches: in the kustomization that installs Argo CD.
# docs/gitops.md says what each check reports.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
`)
	kinds := make([]string, 0, len(Scripts))
	for kind := range Scripts {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		fmt.Fprintf(&b, "  %s: |\n", ConfigMapKey(kind))
		for _, line := range strings.SplitAfter(Scripts[kind], "\n") {
			if line == "" {
				continue
			}
			if line == "\n" {
				b.WriteString(line)
				continue
			}
			b.WriteString("    " + line)
		}
	}
	return []byte(b.String())
}
