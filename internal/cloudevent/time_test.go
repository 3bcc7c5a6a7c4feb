package cloudevent

import (
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	utc := func(s string) *time.Time { return mustTime(t, s) }
	tests := []struct {
		in   string
		want *time.Time // nil: not RFC 3339
	}{
		// Accepted: every spelling RFC 3339 section 5.6 allows.
		{"2026-11-12T00:42:22Z", utc("2026-11-12T00:42:22Z")},
		{"2026-11-12t00:42:22Z", utc("2026-11-12T00:42:22Z")},
		{"2026-11-12T00:42:22z", utc("2026-11-12T00:42:22Z")},
		{"2026-11-12t00:42:22z", utc("2026-11-12T00:42:22Z")},
		{"2026-11-12t00:42:22.5z", utc("2026-11-12T00:42:22.5Z")},
		{"2026-11-12T00:42:22.123456789Z", utc("2026-11-12T00:42:22.123456789Z")},
		{"2026-11-12T00:42:22.1234567891234Z", utc("2026-11-12T00:42:22.123456789Z")},
		{"2026-11-12T02:42:22+02:00", utc("2026-11-12T00:42:22Z")},
		{"2026-11-11T23:42:22.25-01:00", utc("2026-11-12T00:42:22.25Z")},
		{"2026-11-12T00:42:22+23:59", utc("2026-11-11T00:43:22Z")},
		{"2026-11-12T00:42:22-00:00", utc("2026-11-12T00:42:22Z")},
		{"2024-02-29T00:00:00Z", utc("2024-02-29T00:00:00Z")},
		{"0000-01-01T00:00:00Z", utc("0000-01-01T00:00:00Z")},

		// Refused: not RFC 3339, even where Go's own parsers would take it.
		{"", nil},
		{"2026-11-12", nil},
		{"2026-11-12T00:42:22", nil},          // no offset
		{"2026-11-12 00:42:22Z", nil},         // space for T: ISO 8601 profile, not the RFC's grammar
		{"2026-11-12x00:42:22Z", nil},         // other letter
		{"2026-11-12T00:42:22,5Z", nil},       // comma fraction, taken by time.Parse
		{"2026-11-12T0:42:22Z", nil},          // one-digit hour, taken by time.Parse
		{"2026-11-12T00:42:22+24:00", nil},    // offset hour 24, taken by time.Parse
		{"2026-11-12T00:42:22+01:60", nil},    // offset minute 60
		{"2026-11-12T00:42:22+0100", nil},     // offset without colon
		{"2026-11-12T00:42:22+01", nil},       // offset without minutes
		{"2026-11-12T00:42:22.Z", nil},        // fraction without digits
		{"2026-11-12T00:42:22ZZ", nil},        // trailing garbage
		{"2026-11-12T00:42:22Z ", nil},        // trailing space
		{" 2026-11-12T00:42:22Z", nil},        // leading space
		{"2026-11-12T24:00:00Z", nil},         // hour 24
		{"2026-11-12T00:60:00Z", nil},         // minute 60
		{"2016-12-31T23:59:60Z", nil},         // leap second: valid RFC 3339, no time.Time
		{"2026-02-29T00:00:00Z", nil},         // not a leap year
		{"2026-13-01T00:00:00Z", nil},         // month 13
		{"2026-11-12T00:42:22.5+01:00x", nil}, // trailing garbage after an offset
		{"+2026-11-12T00:42:22Z", nil},        // signed year
		{"12026-11-12T00:42:22Z", nil},        // five-digit year
		{"2026-1-12T00:42:22Z", nil},          // one-digit month
		{"2026-11-12T00:42:22\u00a0Z", nil},   // non-ASCII
		{"2026-11-12T00:42:22Z\u0000", nil},   // NUL after the offset
	}
	for _, tt := range tests {
		got := parseTime(tt.in)
		switch {
		case got == nil && tt.want == nil:
		case got == nil || tt.want == nil || !got.Equal(*tt.want) || got.Location() != time.UTC:
			t.Errorf("parseTime(%q) = %v, want %v (UTC)", tt.in, got, tt.want)
		}
	}
}
