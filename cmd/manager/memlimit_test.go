package main

import (
	"os"
	"path/filepath"
	"testing"
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
