package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
)

// The lifecycle of a declared Formation, driven by the real reconcilers
// against the test API server with a fake Publisher in place of JetStream:
// admission, the one created event, and the cancel on delete.

// publishCall is one call of the fake Publisher.
type publishCall struct {
	id, namespace, name string
	failed              bool
}

// fakePublisher records every Created and Cancelled call. While failing is
// set for a kind of event, its calls fail, as a JetStream outage would; the
// test clears it to let the next retry through.
type fakePublisher struct {
	mu                               sync.Mutex
	created, cancelled               []publishCall
	failingCreated, failingCancelled bool
}

var errPublishOutage = errors.New("nats: no responders available for request")

func (p *fakePublisher) Created(_ context.Context, id string, f *cellosv1.Formation) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.created = append(p.created, publishCall{id: id, namespace: f.Namespace, name: f.Name, failed: p.failingCreated})
	if p.failingCreated {
		return errPublishOutage
	}
	return nil
}

func (p *fakePublisher) Cancelled(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancelled = append(p.cancelled, publishCall{id: id, failed: p.failingCancelled})
	if p.failingCancelled {
		return errPublishOutage
	}
	return nil
}

// setFailing makes the following calls of Created and Cancelled fail, or
// succeed again.
func (p *fakePublisher) setFailing(created, cancelled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failingCreated, p.failingCancelled = created, cancelled
}

// calls returns copies of the Created and Cancelled calls so far.
func (p *fakePublisher) calls() (created, cancelled []publishCall) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]publishCall(nil), p.created...), append([]publishCall(nil), p.cancelled...)
}

// succeeded counts the calls that did not fail.
func succeeded(calls []publishCall) []publishCall {
	var ok []publishCall
	for _, c := range calls {
		if !c.failed {
			ok = append(ok, c)
		}
	}
	return ok
}

// startDeclared starts the reconcilers with a fake Publisher, and returns
// them, the publisher, and a namespace to declare Formations in.
func startDeclared(t *testing.T, failingCreated, failingCancelled bool) (*reconcilers, *fakePublisher, string) {
	t.Helper()
	pub := &fakePublisher{failingCreated: failingCreated, failingCancelled: failingCancelled}
	r := startReconcilers(t, newNamespace(t), func(c *Config) { c.Publisher = pub })
	return r, pub, newNamespace(t)
}

// validSpec is a spec every admission rule accepts.
func validSpec() *cellosv1.FormationSpec {
	return &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{{Name: "lead"}, {Name: "worker", AuthorizedBy: "lead"}}}
}

// createFormation creates a Formation with spec in namespace and returns it as
// created.
func createFormation(t *testing.T, namespace, name string, spec *cellosv1.FormationSpec, mutate ...func(*cellosv1.Formation)) *cellosv1.Formation {
	t.Helper()
	f := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Spec: spec}
	for _, m := range mutate {
		m(f)
	}
	if err := controlPlane.Client.Create(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	return f
}

// awaitFormation polls the Formation at key until check accepts it, and
// returns it.
func awaitFormation(t *testing.T, what string, key client.ObjectKey, check func(*cellosv1.Formation) error) *cellosv1.Formation {
	t.Helper()
	var f cellosv1.Formation
	eventually(t, what, func() error {
		if err := controlPlane.Client.Get(context.Background(), key, &f); err != nil {
			return err
		}
		return check(&f)
	})
	return &f
}

// published accepts a Formation whose created event is recorded as in the
// stream.
func published(f *cellosv1.Formation) error {
	if !meta.IsStatusConditionTrue(f.Status.Conditions, cellosv1.PublishedCondition) {
		return fmt.Errorf("not published: conditions %+v", f.Status.Conditions)
	}
	return nil
}

// awaitGone polls until the Formation at key no longer exists.
func awaitGone(t *testing.T, what string, key client.ObjectKey) {
	t.Helper()
	eventually(t, what, func() error {
		err := controlPlane.Client.Get(context.Background(), key, &cellosv1.Formation{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// A valid declared Formation is admitted once under its uid and its created
// event is published exactly once, also when publishing fails at first: the
// failure is recorded in the Published condition and retried, and the
// retry is the one call that goes through. The created event is then folded,
// as the stream would carry it, and the Formation mirrors it; no further
// Created is published by then.
func TestDeclaredFormationIsAdmittedAndPublishedOnce(t *testing.T) {
	for _, tt := range []struct {
		name           string
		failingCreated bool // Created fails until the test has seen it fail
	}{
		{name: "published at the first attempt"},
		{name: "published by a retry after a failure", failingCreated: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, pub, teamNS := startDeclared(t, tt.failingCreated, false)
			f := createFormation(t, teamNS, "research", validSpec())
			key := client.ObjectKeyFromObject(f)

			if tt.failingCreated {
				awaitFormation(t, "the failed publish is recorded", key, func(f *cellosv1.Formation) error {
					cond := meta.FindStatusCondition(f.Status.Conditions, cellosv1.PublishedCondition)
					if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != cellosv1.PublishFailedReason {
						return fmt.Errorf("Published condition %+v", cond)
					}
					return nil
				})
				pub.setFailing(false, false)
			}
			f = awaitFormation(t, "the Formation is admitted and published", key, published)
			id := string(f.UID)
			if got := f.Labels[cellosv1.FormationIDLabel]; got != id {
				t.Errorf("label %s = %q, want the uid %q", cellosv1.FormationIDLabel, got, id)
			}
			if !controllerutil.ContainsFinalizer(f, cellosv1.CancelFinalizer) {
				t.Errorf("finalizers %v, want %s", f.Finalizers, cellosv1.CancelFinalizer)
			}
			if f.Status.FormationID != id {
				t.Errorf("status.formationId = %q, want %q", f.Status.FormationID, id)
			}

			seq := r.applyOn(t, fold.OperatorSubject(fold.DefaultOperatorPrefix, id),
				`{"type":"dev.cellos.events.cell.formation.v1.created","source":"cellos-operator","data":{"formationId":"`+id+`","namespace":"`+teamNS+`"}}`)
			awaitFormation(t, "the Formation mirrors its created event", key, func(f *cellosv1.Formation) error {
				if f.Status.Phase != cellosv1.FormationPending || f.Status.LastAppliedSequence != int64(seq) {
					return fmt.Errorf("phase %q at %d", f.Status.Phase, f.Status.LastAppliedSequence)
				}
				return nil
			})

			created, cancelled := pub.calls()
			want := publishCall{id: id, namespace: teamNS, name: "research"}
			if ok := succeeded(created); len(ok) != 1 || ok[0] != want {
				t.Errorf("successful Created calls %+v, want exactly %+v", ok, want)
			}
			if tt.failingCreated && len(created) < 2 {
				t.Errorf("Created calls %+v, want a failed one before the successful one", created)
			}
			if len(cancelled) != 0 {
				t.Errorf("Cancelled calls %+v, want none", cancelled)
			}
		})
	}
}

// A declared Formation whose spec breaks an admission rule is refused:
// Stalled with reason InvalidSpec, and neither labelled, held by the
// finalizer nor published. The API server's own rules refuse such a spec,
// so the test lifts them for its duration, as a cluster with an older CRD
// would have it: the operator must not rely on them.
func TestDeclaredFormationWithAnInvalidSpecIsRefused(t *testing.T) {
	_, pub, teamNS := startDeclared(t, false, false)
	liftSpecRules(t)
	// The member worker has no authorizedBy.
	invalid := &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{{Name: "lead"}, {Name: "worker"}}}
	f := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: teamNS, Name: "invalid"}, Spec: invalid}
	eventually(t, "the API server accepts the invalid spec once its rules are lifted", func() error {
		return controlPlane.Client.Create(context.Background(), f.DeepCopy())
	})

	f = awaitFormation(t, "the Formation is refused", client.ObjectKeyFromObject(f), func(f *cellosv1.Formation) error {
		cond := meta.FindStatusCondition(f.Status.Conditions, cellosv1.StalledCondition)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != cellosv1.InvalidSpecReason {
			return fmt.Errorf("Stalled condition %+v", cond)
		}
		return nil
	})
	if _, ok := f.Labels[cellosv1.FormationIDLabel]; ok || len(f.Finalizers) != 0 || f.Status.FormationID != "" {
		t.Errorf("refused Formation was admitted: labels %v, finalizers %v, formationId %q", f.Labels, f.Finalizers, f.Status.FormationID)
	}
	if created, _ := pub.calls(); len(created) != 0 {
		t.Errorf("Created calls %+v, want none", created)
	}
}

// liftSpecRules removes the validation rules of the Formation spec from the
// CRD until the test ends.
func liftSpecRules(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	path := []string{"spec", "versions"}
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	key := client.ObjectKey{Name: "formations.cellos.dev"}
	edit := func(rules []any) error {
		if err := controlPlane.Client.Get(ctx, key, crd); err != nil {
			return err
		}
		versions, _, err := unstructured.NestedSlice(crd.Object, path...)
		if err != nil || len(versions) != 1 {
			return fmt.Errorf("CRD versions %v: %v", versions, err)
		}
		v := versions[0].(map[string]any)
		rulesPath := []string{"schema", "openAPIV3Schema", "properties", "spec", "x-kubernetes-validations"}
		if rules == nil {
			unstructured.RemoveNestedField(v, rulesPath...)
		} else if err := unstructured.SetNestedSlice(v, rules, rulesPath...); err != nil {
			return err
		}
		if err := unstructured.SetNestedSlice(crd.Object, versions, path...); err != nil {
			return err
		}
		return controlPlane.Client.Update(ctx, crd)
	}
	if err := controlPlane.Client.Get(ctx, key, crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, path...)
	saved, found, err := unstructured.NestedSlice(versions[0].(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "x-kubernetes-validations")
	if err != nil || !found {
		t.Fatalf("the Formation spec has no rules to lift (%v)", err)
	}
	eventually(t, "the spec rules are lifted", func() error { return edit(nil) })
	t.Cleanup(func() {
		eventually(t, "the spec rules are restored", func() error { return edit(saved) })
	})
}

// Deleting a declared Formation cancels its formation when, and only when,
// the Formation owns it: the owner publishes one cancelled event with its
// id, holding its finalizer until that publish succeeds, records the
// tombstone and goes. A copy that carries another Formation's label and
// finalizer (as a restore from backup would) goes without cancelling the
// formation it follows.
func TestDeletingADeclaredFormationCancelsOnlyItsOwn(t *testing.T) {
	for _, tt := range []struct {
		name             string
		copyOf           bool // the Formation is a copy labelled with another formation's id
		failingCancelled bool // Cancelled fails until the test has seen the finalizer hold
		wantCancelled    bool
	}{
		{name: "the owner cancels its formation", wantCancelled: true},
		{name: "a failed cancel holds the finalizer until a retry succeeds", failingCancelled: true, wantCancelled: true},
		{name: "a copy cancels nothing", copyOf: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, pub, teamNS := startDeclared(t, false, tt.failingCancelled)
			ctx := context.Background()
			var f *cellosv1.Formation
			var id string
			if tt.copyOf {
				// The formation is live in the stream, declared in this
				// namespace: a cancel for it would take effect.
				id = "2c5ea4c0-4067-4f2a-9f7e-3b1d0c9a8e71"
				r.applyOn(t, fold.OperatorSubject(fold.DefaultOperatorPrefix, id),
					`{"type":"dev.cellos.events.cell.formation.v1.created","source":"cellos-operator","data":{"formationId":"`+id+`","namespace":"`+teamNS+`"}}`)
				f = createFormation(t, teamNS, "restored", validSpec(), func(f *cellosv1.Formation) {
					f.Labels = map[string]string{cellosv1.FormationIDLabel: id}
					f.Finalizers = []string{cellosv1.CancelFinalizer}
				})
				f = awaitFormation(t, "the copy follows the stream", client.ObjectKeyFromObject(f), func(f *cellosv1.Formation) error {
					if f.Status.Phase != cellosv1.FormationPending {
						return fmt.Errorf("phase %q", f.Status.Phase)
					}
					return nil
				})
			} else {
				f = createFormation(t, teamNS, "research", validSpec())
				f = awaitFormation(t, "the Formation is admitted and published", client.ObjectKeyFromObject(f), published)
				id = string(f.UID)
			}
			key := client.ObjectKeyFromObject(f)
			if err := controlPlane.Client.Delete(ctx, f); err != nil {
				t.Fatal(err)
			}

			if tt.failingCancelled {
				// A second failed call is a retry: the first failure let
				// nothing go.
				eventually(t, "a failed cancel is retried", func() error {
					if _, cancelled := pub.calls(); len(cancelled) < 2 {
						return fmt.Errorf("Cancelled calls %+v, want two failed ones", cancelled)
					}
					return nil
				})
				held := awaitFormation(t, "the deleted Formation is still there", key, func(*cellosv1.Formation) error { return nil })
				if !controllerutil.ContainsFinalizer(held, cellosv1.CancelFinalizer) {
					t.Errorf("finalizers %v after a failed cancel, want %s held", held.Finalizers, cellosv1.CancelFinalizer)
				}
				pub.setFailing(false, false)
			}
			awaitGone(t, "the deleted Formation goes", key)

			_, cancelled := pub.calls()
			ok := succeeded(cancelled)
			switch {
			case !tt.wantCancelled && len(cancelled) != 0:
				t.Errorf("Cancelled calls %+v, want none", cancelled)
			case tt.wantCancelled && (len(ok) != 1 || ok[0].id != id):
				t.Errorf("successful Cancelled calls %+v, want exactly one for %s", ok, id)
			case tt.wantCancelled && !r.tombstones.Has(id):
				t.Errorf("no tombstone for the cancelled formation %s", id)
			}
		})
	}
}
