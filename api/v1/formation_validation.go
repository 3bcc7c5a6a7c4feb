package v1

import (
	"errors"
	"fmt"
)

// Validate checks the admission rules that the CRD's CEL rules also enforce,
// for API servers that do not: unique member names, a coordinator among the
// members, and an authorizedBy on every other member naming another member.
// The messages are the CEL rules' own.
func (s *FormationSpec) Validate() error {
	names := make(map[string]bool, len(s.Members))
	var errs []error
	for _, m := range s.Members {
		if names[m.Name] {
			errs = append(errs, fmt.Errorf("members: member names must be unique (%q appears twice)", m.Name))
		}
		names[m.Name] = true
	}
	if !names[s.Coordinator] {
		errs = append(errs, fmt.Errorf("coordinator: coordinator must name one of the members (%q does not)", s.Coordinator))
	}
	for _, m := range s.Members {
		switch {
		case m.Name != s.Coordinator && m.AuthorizedBy == "":
			errs = append(errs, fmt.Errorf("members: every member other than the coordinator needs authorizedBy, naming the member that admits it (%q has none)", m.Name))
		case m.AuthorizedBy != "" && (m.AuthorizedBy == m.Name || !names[m.AuthorizedBy]):
			errs = append(errs, fmt.Errorf("members: authorizedBy must name another member of the formation, not the member itself (%q names %q)", m.Name, m.AuthorizedBy))
		}
	}
	return errors.Join(errs...)
}
