package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/go-logr/logr"
)

func TestCgroupMemoryLimit(t *testing.T) {
	for name, tc := range map[string]struct {
		files     map[string]string
		want      int64
		wantLimit bool
	}{
		"cgroup v2 with a limit":    {files: map[string]string{"memory.max": "536870912\n"}, want: 536870912, wantLimit: true},
		"cgroup v2 without a limit": {files: map[string]string{"memory.max": "max\n"}},
		"cgroup v1 with a limit":    {files: map[string]string{"memory/memory.limit_in_bytes": "268435456\n"}, want: 268435456, wantLimit: true},
		"cgroup v1 without a limit": {files: map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}},
		"no cgroup":                 {},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			for path, content := range tc.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, path)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, path), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, ok, err := cgroupMemoryLimit(root)
			if err != nil || got != tc.want || ok != tc.wantLimit {
				t.Errorf("cgroupMemoryLimit = %d, %t, %v; want %d, %t, nil", got, ok, err, tc.want, tc.wantLimit)
			}
		})
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("lots"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cgroupMemoryLimit(root); err == nil {
		t.Error("a limit that is not a number was read without an error")
	}
}

func TestSetGCPercent(t *testing.T) {
	previous := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(previous) })

	t.Setenv("GOGC", "")
	if err := setGCPercent(logr.Discard(), 50); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("with no GOGC, --gogc=50 left the collector's target at %d", got)
	}

	t.Setenv("GOGC", "200")
	if err := setGCPercent(logr.Discard(), 50); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC in the environment did not win over --gogc: the target is %d, want it left at 100", got)
	}

	for _, percent := range []int{0, -1} {
		if err := setGCPercent(logr.Discard(), percent); err == nil {
			t.Errorf("--gogc=%d was accepted", percent)
		}
	}
}
