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
		"hash suffix sanitized": {id: "cell-0123456789"},
		"longer hex kept":       {id: "cell-0123456789a", want: "cell-0123456789a"},
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
