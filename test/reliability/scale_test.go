package reliability

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// full tells whether RELIABILITY_SCALE=full asks for the full scenarios
// (make test-reliability); otherwise each runs a small version that fits
// in CI (make test).
var full = os.Getenv("RELIABILITY_SCALE") == "full"

// knob is one count of a scenario: small in CI, large in the full suite,
// and overridden by the environment variable RELIABILITY_<NAME>.
func knob(name string, small, large int) int {
	if v := os.Getenv("RELIABILITY_" + name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			panic(fmt.Sprintf("RELIABILITY_%s=%q is not a number", name, v))
		}
		return n
	}
	if full {
		return large
	}
	return small
}

// seconds is knob for durations in seconds.
func seconds(name string, small, large int) time.Duration {
	return time.Duration(knob(name, small, large)) * time.Second
}

// row is one scenario's line in docs/reliability.md.
type row struct {
	Scenario  string
	Runs      int
	Events    int
	Lost      int
	Regressed int
	Recover   string
	PeakMiB   float64
	Notes     string
}

type report struct {
	mu   sync.Mutex
	rows []row
}

var results = &report{}

func (r *report) add(x row) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, x)
}

func (r *report) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rows) == 0 {
		return ""
	}
	scale := "small (make test)"
	if full {
		scale = "full (make test-reliability)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Scale: %s; race detector: %v\n\n", scale, raceEnabled)
	b.WriteString("| Scenario | Runs | Events | Lost | Regressed | Time to recover | Peak memory (VmHWM) | Notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %.0f MiB | %s |\n",
			x.Scenario, x.Runs, x.Events, x.Lost, x.Regressed, x.Recover, x.PeakMiB, x.Notes)
	}
	return b.String()
}

func (r *report) print(w io.Writer) {
	if md := r.markdown(); md != "" {
		fmt.Fprintf(w, "\nReliability figures\n\n%s\n", md)
	}
}

func (r *report) write(path string) error {
	return os.WriteFile(path, []byte(r.markdown()), 0o644)
}

// durations formats recovery times: one, or the median and the worst.
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	sorted := append([]time.Duration(nil), ds...)
	for i := range sorted {
		for j := i + 1; j < len(sorted); j++ {
			if sorted[j] < sorted[i] {
				sorted[i], sorted[j] = sorted[j], sorted[i]
			}
		}
	}
	round := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	if len(sorted) == 1 {
		return round(sorted[0])
	}
	return fmt.Sprintf("median %s, max %s", round(sorted[len(sorted)/2]), round(sorted[len(sorted)-1]))
}
