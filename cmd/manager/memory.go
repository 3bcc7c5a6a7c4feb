package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
)

// The cgroup files that hold the container's memory limit, under the
// cgroup mount: cgroup v2's first, then v1's.
var cgroupMemoryLimitFiles = []string{"memory.max", "memory/memory.limit_in_bytes"}

// cgroupUnlimited is where cgroup v1 reports no limit: about the largest
// page-aligned int64.
const cgroupUnlimited = 1 << 62

// cgroupMemoryLimit reads the memory limit of the cgroup mounted at root
// (the container's, in a pod), in bytes; false when it sets none.
func cgroupMemoryLimit(root string) (int64, bool, error) {
	for _, name := range cgroupMemoryLimitFiles {
		b, err := os.ReadFile(filepath.Join(root, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, err
		}
		text := strings.TrimSpace(string(b))
		if text == "max" {
			return 0, false, nil
		}
		limit, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("reading the memory limit in %s: %w", name, err)
		}
		if limit >= cgroupUnlimited {
			return 0, false, nil
		}
		return limit, true, nil
	}
	return 0, false, nil
}

// setMemoryLimit gives the Go runtime a soft memory limit of ratio times
// the container's, unless GOMEMLIMIT sets one or ratio is 0. The informer
// cache and the fold grow with the live objects, and the collector lets
// the heap grow to twice what it last kept (GOGC=100): without a limit
// the container is killed for memory when its live heap nears half its
// limit; with one, the collector works harder near the limit instead, and
// the live heap can use most of it.
func setMemoryLimit(log logr.Logger, cgroupRoot string, ratio float64) error {
	if ratio < 0 || ratio > 1 {
		return fmt.Errorf("--auto-gomemlimit-ratio %g: must be between 0 (off) and 1", ratio)
	}
	if env := os.Getenv("GOMEMLIMIT"); env != "" || ratio == 0 {
		return nil
	}
	limit, ok, err := cgroupMemoryLimit(cgroupRoot)
	if err != nil || !ok {
		return err
	}
	goLimit := int64(float64(limit) * ratio)
	debug.SetMemoryLimit(goLimit)
	log.Info("Set the Go memory limit from the container's", "containerBytes", limit, "ratio", ratio, "goMemLimitBytes", goLimit)
	return nil
}

// setGCPercent sets the collector's target (GOGC) to percent, unless the
// GOGC environment variable sets one. Between collections the heap grows
// to (1 + percent/100) times what the last one kept, so the RSS a live
// object costs is about that multiple of its heap: the operator's default,
// 50, holds it at 1.5 rather than Go's 2, for a little more of a core
// (docs/performance.md, "A lower GOGC").
func setGCPercent(log logr.Logger, percent int) error {
	if percent <= 0 {
		return fmt.Errorf("--gogc %d: must be positive (GOGC=off is for the environment, not the operator)", percent)
	}
	if os.Getenv("GOGC") != "" {
		return nil
	}
	debug.SetGCPercent(percent)
	log.V(1).Info("Set the collector's target", "gogc", percent)
	return nil
}
