package cloudevent

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	long := strings.Repeat("a", 1048576)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"short", `a"b`, `"a\"b"`},
		{"exactly the bound", strings.Repeat("x", MaxQuoted), `"` + strings.Repeat("x", MaxQuoted) + `"`},
		{"one byte over", strings.Repeat("x", MaxQuoted+1), `"` + strings.Repeat("x", MaxQuoted) + `"…(129 bytes)`},
		{"1 MiB", long, `"` + long[:MaxQuoted] + `"…(1048576 bytes)`},
		// 127 bytes, then a 3-byte character across the bound: it is left
		// out whole rather than cut into bytes that are no character.
		{"cut before a character", strings.Repeat("x", MaxQuoted-1) + "日本", `"` + strings.Repeat("x", MaxQuoted-1) + `"…(133 bytes)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quote(tt.in); got != tt.want {
				t.Errorf("Quote = %.300s, want %.300s", got, tt.want)
			}
		})
	}
}
