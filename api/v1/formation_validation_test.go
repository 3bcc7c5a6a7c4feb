package v1

import (
	"strings"
	"testing"
)

func TestFormationSpecValidate(t *testing.T) {
	cases := map[string]struct {
		spec FormationSpec
		want string // a part of the error; empty when valid
	}{
		"valid":                       {FormationSpec{Coordinator: "lead", Members: []FormationMember{{Name: "lead"}, {Name: "worker", AuthorizedBy: "lead"}}}, ""},
		"duplicate member":            {FormationSpec{Coordinator: "lead", Members: []FormationMember{{Name: "lead"}, {Name: "lead"}}}, "member names must be unique"},
		"coordinator not a member":    {FormationSpec{Coordinator: "boss", Members: []FormationMember{{Name: "lead"}}}, "coordinator must name one of the members"},
		"member without authorizedBy": {FormationSpec{Coordinator: "lead", Members: []FormationMember{{Name: "lead"}, {Name: "worker"}}}, "needs authorizedBy"},
		"authorizes itself":           {FormationSpec{Coordinator: "lead", Members: []FormationMember{{Name: "lead"}, {Name: "worker", AuthorizedBy: "worker"}}}, "authorizedBy must name another member"},
		"authorized by a stranger":    {FormationSpec{Coordinator: "lead", Members: []FormationMember{{Name: "lead"}, {Name: "worker", AuthorizedBy: "ghost"}}}, "authorizedBy must name another member"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.spec.Validate()
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("Validate() = %v, want %q", err, c.want)
			}
		})
	}
}
