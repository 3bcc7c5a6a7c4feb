package store

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestObjectName(t *testing.T) {
	long := strings.Repeat("c.", 150) + "09974d7"
	cases := map[string]struct {
		id   string
		want string // exact name, or "" to check only validity and the hash suffix
	}{
		"valid id kept":         {id: "cell-02daa0b3-0", want: "cell-02daa0b3-0"},
		"uuid kept":             {id: "02daa0b3-49a7-a4bf-8050-cbb812881d4e", want: "02daa0b3-49a7-a4bf-8050-cbb812881d4e"},
		"upper case sanitized":  {id: "Cell-A"},
		"too long sanitized":    {id: long},
		"symbols only":          {id: "!!!"},
		"underscores sanitized": {id: "run_1/cell_2"},
		"hash suffix sanitized": {id: "cell-" + strings.Repeat("0123456789abcdef", 2)},
		"old suffix sanitized":  {id: "cell-0123456789"},
		"longer hex kept":       {id: "cell-0123456789a", want: "cell-0123456789a"},
		"shorter hex kept":      {id: "cell-" + strings.Repeat("0123456789abcdef", 2)[1:], want: "cell-" + strings.Repeat("0123456789abcdef", 2)[1:]},
	}
	seen := map[string]string{}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := ObjectName(tc.id)
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Fatalf("ObjectName(%q) = %q, not a valid name: %v", tc.id, got, errs)
			}
			if tc.want != "" && got != tc.want {
				t.Fatalf("ObjectName(%q) = %q, want %q", tc.id, got, tc.want)
			}
			if ObjectName(tc.id) != got {
				t.Fatalf("ObjectName(%q) is not deterministic", tc.id)
			}
			if tc.want == "" && !hasHashSuffix(got, hashLen) {
				t.Fatalf("ObjectName(%q) = %q, want a suffix of %d hex digits", tc.id, got, hashLen)
			}
		})
		seen[ObjectName(tc.id)] = tc.id
	}
	if len(seen) != len(cases) {
		t.Fatalf("names collide: %v", seen)
	}
	// Ids that sanitize to the same text still get different names.
	if a, b := ObjectName("Cell-A"), ObjectName("cell_a"); a == b {
		t.Fatalf("%q and %q share the name %q", "Cell-A", "cell_a", a)
	}
	// An id that spells another's sanitized name gets a name of its own,
	// and so does one that spells that one's.
	a := "Cell-A"
	b := ObjectName(a)
	c := ObjectName(b)
	if b == c || ObjectName(c) == c || ObjectName(c) == b {
		t.Fatalf("ids %q, %q and %q share names: %q, %q and %q", a, b, c, b, c, ObjectName(c))
	}
}

// Sanitized names carry 128 bits of SHA-256: a collision takes more than
// brute force. Ids that share all but their last bytes, cut alike to make
// room, still get names of their own.
func TestObjectNameSuffixIs128Bits(t *testing.T) {
	prefix := strings.Repeat("x", 300)
	a, b := ObjectName(prefix+"1"), ObjectName(prefix+"2")
	if a == b {
		t.Fatalf("%q and %q share a name", prefix+"1", prefix+"2")
	}
	if len(a) != validation.DNS1123SubdomainMaxLength {
		t.Errorf("name of a long id is %d bytes, want %d", len(a), validation.DNS1123SubdomainMaxLength)
	}
	if i := strings.LastIndexByte(a, '-'); len(a)-i-1 != 32 {
		t.Errorf("%q: suffix of %d hex digits, want 32 (128 bits)", a, len(a)-i-1)
	}
}

// Objects named before the suffix grew keep being recognised as their ids':
// LegacyObjectName is what that version gave (these names are its output),
// and an id that spells such a name is not kept as it is, so no new name
// meets an old one.
func TestLegacyObjectName(t *testing.T) {
	long := strings.Repeat("c.", 150) + "09974d7"
	for id, old := range map[string]string{
		"Cell-A":          "cell-a-ca1a51d0ee",
		"run_1/cell_2":    "run-1-cell-2-896711b2e3",
		"cell-0123456789": "cell-0123456789-31c223184b",
		long:              strings.Repeat("c-", 121) + "f6dc9f509d",
		"cell-02daa0b3-0": "cell-02daa0b3-0",
		// The old version kept this one: its suffix is not the old length.
		"cell-" + strings.Repeat("0123456789abcdef", 2): "cell-" + strings.Repeat("0123456789abcdef", 2),
	} {
		if got := LegacyObjectName(id); got != old {
			t.Errorf("LegacyObjectName(%.40q) = %q, want %q", id, got, old)
		}
		if !IsNameOf(old, id) || !IsNameOf(ObjectName(id), id) {
			t.Errorf("%q and %q are not both names of %.40q", old, ObjectName(id), id)
		}
		if old != id && ObjectName(old) == old {
			t.Errorf("the id %q, spelling the old name of %.40q, is kept as its name", old, id)
		}
	}
	if IsNameOf(ObjectName("Cell-B"), "Cell-A") || IsNameOf(LegacyObjectName("Cell-B"), "Cell-A") {
		t.Error("a name of Cell-B is taken for one of Cell-A")
	}
}
