package controllers

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
)

// Every status string has a maxLength in the CRDs, at the bound the fold
// enforces: the API server refuses a longer one, naming the field, and
// takes one at the bound. So nothing, the operator or a hand edit, can make
// one object hold a megabyte of status.
func TestStatusStringsAreBounded(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	c := controlPlane.Client
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		field string
		max   int
		obj   func(v string) client.Object
	}{
		{"cellId", fold.MaxIDBytes, func(v string) client.Object { return &cellosv1.Cell{Status: cellosv1.CellStatus{CellID: v}} }},
		{"specId", fold.MaxFieldBytes, func(v string) client.Object { return &cellosv1.Cell{Status: cellosv1.CellStatus{SpecID: v}} }},
		{"runId", fold.MaxFieldBytes, func(v string) client.Object { return &cellosv1.Cell{Status: cellosv1.CellStatus{RunID: v}} }},
		{"outcome", fold.MaxFieldBytes, func(v string) client.Object { return &cellosv1.Cell{Status: cellosv1.CellStatus{Outcome: v}} }},
		{"formationId", 36, func(v string) client.Object { return &cellosv1.Cell{Status: cellosv1.CellStatus{FormationID: v}} }},
		{"streamStamp", 24, func(v string) client.Object { return &cellosv1.Cell{Status: cellosv1.CellStatus{StreamStamp: v}} }},
		{"formationName", fold.MaxFieldBytes, func(v string) client.Object {
			return &cellosv1.Formation{Status: cellosv1.FormationStatus{FormationName: v}}
		}},
		{"formationId", 36, func(v string) client.Object {
			return &cellosv1.Formation{Status: cellosv1.FormationStatus{FormationID: v}}
		}},
		{"cells", 32, func(v string) client.Object { return &cellosv1.Formation{Status: cellosv1.FormationStatus{Cells: v}} }},
		{"streamStamp", 24, func(v string) client.Object {
			return &cellosv1.Formation{Status: cellosv1.FormationStatus{StreamStamp: v}}
		}},
	}
	for i, tc := range cases {
		for _, n := range []int{tc.max, tc.max + 1} {
			obj := tc.obj(long(n))
			status := obj.DeepCopyObject().(client.Object)
			obj.SetNamespace(ns)
			obj.SetName("bounded-" + strings.ToLower(tc.field) + "-" + string(rune('a'+i)) + "-" + map[bool]string{true: "at", false: "over"}[n == tc.max])
			if err := c.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			status.SetNamespace(obj.GetNamespace())
			status.SetName(obj.GetName())
			status.SetResourceVersion(obj.GetResourceVersion())
			err := c.Status().Update(ctx, status)
			switch {
			case n == tc.max && err != nil:
				t.Errorf("%T status.%s of %d bytes, the bound: %v", obj, tc.field, n, err)
			case n > tc.max && (!apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "status."+tc.field)):
				t.Errorf("%T status.%s of %d bytes: got %v, want Invalid naming status.%s", obj, tc.field, n, err, tc.field)
			}
		}
	}
}
