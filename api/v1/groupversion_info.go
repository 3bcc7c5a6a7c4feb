// Package v1 contains the cellos.dev/v1 API: Formations and Cells whose status
// mirrors the cellos event stream.
//
// It depends on apimachinery alone, so that any client can import it cheaply.
// +kubebuilder:object:generate=true
// +groupName=cellos.dev
package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "cellos.dev", Version: "v1"}

	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme registers the kinds of this package, for clients and managers.
	AddToScheme = schemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Formation{}, &FormationList{}, &Cell{}, &CellList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
