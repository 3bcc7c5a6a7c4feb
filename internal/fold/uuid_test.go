package fold

import (
	"regexp"
	"strings"
	"testing"
)

func TestParseUUID(t *testing.T) {
	const (
		hyph  = "67e55044-10b1-426f-9247-bb680e5fe0c8"
		upper = "67E55044-10B1-426F-9247-BB680E5FE0C8"
		mixed = "F9168C5E-CEB2-4faa-B6BF-329BF39FA1E4"
	)
	simple := strings.ReplaceAll(hyph, "-", "")
	accepted := []struct{ in, want string }{
		{hyph, hyph},
		{upper, hyph},
		{mixed, "f9168c5e-ceb2-4faa-b6bf-329bf39fa1e4"},
		{simple, hyph},
		{strings.ToUpper(simple), hyph},
		{"{" + hyph + "}", hyph},
		{"{" + upper + "}", hyph},
		{"urn:uuid:" + hyph, hyph},
		{"urn:uuid:" + upper, hyph},
		{"00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"},
		{"ffffffffffffffffffffffffffffffff", "ffffffff-ffff-ffff-ffff-ffffffffffff"},
	}
	for _, tt := range accepted {
		got, err := CanonicalID(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("CanonicalID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}

	rejected := []struct{ in, reason string }{
		{"", "0 bytes are none of"},
		{"not-a-uuid", "10 bytes are none of"},
		// Wrappers google/uuid takes and the uuid crate does not.
		{"(" + hyph + ")", "38 bytes are none of"},
		{`"` + hyph + `"`, "38 bytes are none of"},
		{"[" + hyph + "]", "38 bytes are none of"},
		{"{" + hyph + ")", "38 bytes are none of"},
		{"URN:UUID:" + hyph, "45 bytes are none of"},
		{"Urn:Uuid:" + hyph, "45 bytes are none of"},
		{"urn:UUID:" + hyph, "45 bytes are none of"},
		// Wrappers around the simple form.
		{"{" + simple + "}", "34 bytes are none of"},
		{"urn:uuid:" + simple, "41 bytes are none of"},
		// Surrounding space, one digit too many or too few.
		{" " + hyph, "37 bytes are none of"},
		{hyph + "\n", "37 bytes are none of"},
		{simple[:31], "31 bytes are none of"},
		{simple + "0", "33 bytes are none of"},
		{"{" + hyph[:35] + "}", "37 bytes are none of"},
		// The right length, the wrong content.
		{"67e5504410b1426f9247bb680e5fe0cg", `'g' at byte 31 is not a hex digit`},
		{"67e55044-10b1-426f-9247-bb680e5fe0cG", `'G' at byte 35 is not a hex digit`},
		{"67e55044-10b1-426f-9247_bb680e5fe0c8", `'_' at byte 23 where a hyphen belongs`},
		{"67e550441-0b1-426f-9247-bb680e5fe0c8", `'1' at byte 8 where a hyphen belongs`},
		{"67e55044-10b1-426f-9247-bb680e5fe0-8", `'-' at byte 34 is not a hex digit`},
		{"67e5504410b1426f9247bb680e5fe0-8", `'-' at byte 30 is not a hex digit`},
		{"{67e55044-10b1-426f-9247-bb680e5fe0c8x", "38 bytes are none of"},
		{"{67e55044+10b1-426f-9247-bb680e5fe0c8}", `'+' at byte 9 where a hyphen belongs`},
		{"urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0cz", `'z' at byte 44 is not a hex digit`},
		{"urn:uuid-67e55044-10b1-426f-9247-bb680e5fe0c8", "45 bytes are none of"},
		{"67e55044-10b1-426f-9247-bb680e5fé0c", `'é' at byte 32 is not a hex digit`},
		{"0x67e5504410b1426f9247bb680e5fe0", `'x' at byte 1 is not a hex digit`},
	}
	for _, tt := range rejected {
		got, err := CanonicalID(tt.in)
		if err == nil || got != "" {
			t.Errorf("CanonicalID(%q) = %q, %v; want an error", tt.in, got, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("CanonicalID(%q) error %q, want it to contain %q", tt.in, err, tt.reason)
		}
	}
}

// uuidRE is the oracle for CanonicalID: the uuid crate's four forms as one
// regular expression.
var uuidRE = regexp.MustCompile(`^(?:[[:xdigit:]]{32}|(?:\{|urn:uuid:)?[[:xdigit:]]{8}(?:-[[:xdigit:]]{4}){3}-[[:xdigit:]]{12}\}?)$`)

func FuzzParseUUID(f *testing.F) {
	for _, s := range []string{
		"67e55044-10b1-426f-9247-bb680e5fe0c8", "{67E55044-10B1-426F-9247-BB680E5FE0C8}",
		"urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8", "67e5504410b1426f9247bb680e5fe0c8",
		"(67e55044-10b1-426f-9247-bb680e5fe0c8)", "URN:UUID:67e55044-10b1-426f-9247-bb680e5fe0c8",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := CanonicalID(s)
		// The expression alone would let a brace stand without its pair.
		want := uuidRE.MatchString(s) && strings.HasPrefix(s, "{") == strings.HasSuffix(s, "}")
		if (err == nil) != want {
			t.Fatalf("CanonicalID(%q) = %q, %v; the uuid crate's forms say ok=%v", s, got, err, want)
		}
		if err != nil {
			return
		}
		digits := strings.ToLower(strings.NewReplacer("urn:uuid:", "", "{", "", "}", "", "-", "").Replace(s))
		if wantID := digits[:8] + "-" + digits[8:12] + "-" + digits[12:16] + "-" + digits[16:20] + "-" + digits[20:]; got != wantID {
			t.Fatalf("CanonicalID(%q) = %q, want %q", s, got, wantID)
		}
	})
}
