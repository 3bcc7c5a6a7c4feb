// Package grafana holds the operator's Grafana dashboard; its test checks
// that every metric the dashboard queries is one the operator registers,
// and that docs/operations.md describes every one of them.
package grafana

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var repoRoot = filepath.Join("..", "..")

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos struct {
			X, Y, W, H int
		} `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// operatorMetrics finds the metrics the operator registers: the Name of
// every prometheus.*Opts literal in its non-test Go files, with whether it
// is a histogram or summary (whose series carry suffixes).
func operatorMetrics(t *testing.T) map[string]bool {
	t.Helper()
	found := map[string]bool{}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "hack", "testdata", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "prometheus" {
				return true
			}
			for _, elt := range lit.Elts {
				kv, ok := elt.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				if key, ok := kv.Key.(*ast.Ident); ok && key.Name == "Name" {
					if v, ok := kv.Value.(*ast.BasicLit); ok && v.Kind == token.STRING {
						name, _ := strconv.Unquote(v.Value)
						found[name] = sel.Sel.Name == "HistogramOpts" || sel.Sel.Name == "SummaryOpts"
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) == 0 {
		t.Fatal("found no metric in the code")
	}
	return found
}

var metricName = regexp.MustCompile(`\bcellos_operator_[a-z0-9_]+`)

// known tells whether a series name belongs to a registered metric.
func known(metrics map[string]bool, series string) bool {
	if _, ok := metrics[series]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok && metrics[base] {
			return true
		}
	}
	return false
}

func TestDashboardQueriesOnlyTheOperatorsMetrics(t *testing.T) {
	b, err := os.ReadFile("cellos-operator.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	if !slices.ContainsFunc(d.Templating.List, func(v struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}) bool {
		return v.Name == "datasource" && v.Type == "datasource"
	}) {
		t.Error("the dashboard has no datasource variable: it would not import into another Grafana")
	}

	metrics := operatorMetrics(t)
	queried := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: gridPos %+v is off the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			names := metricName.FindAllString(target.Expr, -1)
			if len(names) == 0 || target.RefID == "" {
				t.Errorf("panel %q: query %q names no operator metric, or has no refId", p.Title, target.Expr)
			}
			for _, name := range names {
				if !known(metrics, name) {
					t.Errorf("panel %q queries %s, which the operator does not register", p.Title, name)
				}
				queried[name] = true
			}
		}
	}
	// The panels the runbook points at.
	for _, want := range []string{
		"cellos_operator_lag_events", "cellos_operator_cursor_sequence", "cellos_operator_stream_last_sequence",
		"cellos_operator_status_writes_total", "cellos_operator_status_write_duration_seconds_bucket",
		"cellos_operator_objects_refused_total", "cellos_operator_events_total",
		"cellos_operator_consumer_errors_total", "cellos_operator_publish_total",
	} {
		if !queried[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
}

func TestOperationsDocDescribesEveryMetric(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range operatorMetrics(t) {
		if !strings.Contains(string(doc), "`"+name) {
			t.Errorf("docs/operations.md does not describe the metric %s", name)
		}
	}
	for _, name := range metricName.FindAllString(string(doc), -1) {
		if !known(operatorMetrics(t), name) {
			t.Errorf("docs/operations.md names %s, which the operator does not register", name)
		}
	}
}
