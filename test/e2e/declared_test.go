package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// A Formation declared in Git, labelled with its id, waits for the stream and
// then mirrors it where it is, the namespace the operator's own created
// event names (as another cluster's operator sharing the stream publishes
// it); its Cells join it in its namespace.
func TestDeclaredFormationFollowsTheStream(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	const id = "5b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7a"
	ctx := context.Background()
	c := controlPlane.Client
	declared := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: teamNS, Name: "research", Labels: map[string]string{cellosv1.FormationIDLabel: id}},
		Spec: &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
			{Name: "lead"}, {Name: "worker", AuthorizedBy: "lead"},
		}},
	}
	if err := c.Create(ctx, declared); err != nil {
		t.Fatal(err)
	}
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	key := client.ObjectKeyFromObject(declared)

	harness.Eventually(t, time.Minute, "the declared Formation awaits the stream", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, key, &f); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(f.Status.Conditions, cellosv1.ReconcilingCondition)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != cellosv1.AwaitingStreamReason || f.Status.ObservedGeneration != f.Generation {
			return fmt.Errorf("status %+v", f.Status)
		}
		return nil
	})

	publish(t, jsc, []sampleMessage{
		{Subject: "cellos.events.formation." + id, Data: `{"specversion":"1.0","id":"a","source":"cellos-operator","type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":"` + id + `","formationName":"research","namespace":"` + teamNS + `"}}`},
		{Subject: "cellos.events.formation." + id, Data: `{"specversion":"1.0","id":"b","type":"dev.cellos.events.cell.formation.v1.running","data":{"formationId":"` + id + `"}}`},
		{Subject: "cellos.events.cell.5b0e8f4c", Data: `{"specversion":"1.0","id":"c","type":"dev.cellos.events.cell.lifecycle.v1.started","time":"2026-11-28T12:00:00Z","data":{"cellId":"research-lead","formationId":"` + id + `"}}`},
	})
	harness.Eventually(t, time.Minute, "the declared Formation mirrors the stream in its namespace", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, key, &f); err != nil {
			return err
		}
		if f.Status.Phase != cellosv1.FormationRunning || f.Status.FormationID != id || f.Status.Cells != "1/1" {
			return fmt.Errorf("phase %q, id %q, cells %q", f.Status.Phase, f.Status.FormationID, f.Status.Cells)
		}
		var cell cellosv1.Cell
		if err := c.Get(ctx, types.NamespacedName{Namespace: teamNS, Name: "research-lead"}, &cell); err != nil {
			return err
		}
		if len(cell.OwnerReferences) != 1 || cell.OwnerReferences[0].Name != "research" {
			return fmt.Errorf("cell owners %v", cell.OwnerReferences)
		}
		return nil
	})
	var elsewhere cellosv1.FormationList
	if err := c.List(ctx, &elsewhere, client.InNamespace(operatorNS)); err != nil {
		t.Fatal(err)
	}
	if len(elsewhere.Items) != 0 {
		t.Errorf("the stream's formation was also created in the operator's namespace: %v", elsewhere.Items[0].Name)
	}
}

// A Formation declared in the operator's namespace after the stream named its
// id takes the projection over from the observed Formation the operator had
// made, which goes away.
func TestDeclaredFormationTakesOverFromTheObservedOne(t *testing.T) {
	operatorNS := newNamespace(t)
	const id = "7c3e1a9b-2f4d-4e6a-8b1c-9d0e2f3a4b5c"
	ctx := context.Background()
	c := controlPlane.Client
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	publish(t, jsc, []sampleMessage{
		{Subject: "cellos.events.formation." + id, Data: `{"specversion":"1.0","id":"a","type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":"` + id + `"}}`},
		{Subject: "cellos.events.formation." + id, Data: `{"specversion":"1.0","id":"b","type":"dev.cellos.events.cell.formation.v1.running","data":{"formationId":"` + id + `"}}`},
	})
	observed := types.NamespacedName{Namespace: operatorNS, Name: id}
	harness.Eventually(t, time.Minute, "the observed Formation runs", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, observed, &f); err != nil {
			return err
		}
		if f.Status.Phase != cellosv1.FormationRunning {
			return fmt.Errorf("phase %q", f.Status.Phase)
		}
		return nil
	})

	declared := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: "research", Labels: map[string]string{cellosv1.FormationIDLabel: id}},
		Spec:       &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{{Name: "lead"}}},
	}
	if err := c.Create(ctx, declared); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the declared Formation has the projection and the observed one is gone", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, client.ObjectKeyFromObject(declared), &f); err != nil {
			return err
		}
		if f.Status.Phase != cellosv1.FormationRunning || f.Status.LastAppliedSequence != 2 {
			return fmt.Errorf("declared: phase %q at %d", f.Status.Phase, f.Status.LastAppliedSequence)
		}
		return observedGone(ctx, observed)
	})
	publish(t, jsc, []sampleMessage{
		{Subject: "cellos.events.formation." + id, Data: `{"specversion":"1.0","id":"c","type":"dev.cellos.events.cell.formation.v1.completed","data":{"formationId":"` + id + `"}}`},
	})
	harness.Eventually(t, time.Minute, "later events reach the declared Formation, and the observed one stays gone", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, client.ObjectKeyFromObject(declared), &f); err != nil {
			return err
		}
		if f.Status.Phase != cellosv1.FormationSucceeded {
			return fmt.Errorf("declared: phase %q", f.Status.Phase)
		}
		return observedGone(ctx, observed)
	})
	waitForCursor(t, operatorNS, 3)
}

// observedGone is nil once the observed Formation is deleted. envtest runs no
// garbage collector to remove the orphan finalizer, so there a deletion
// stays pending; that counts as gone.
func observedGone(ctx context.Context, key types.NamespacedName) error {
	var f cellosv1.Formation
	err := controlPlane.Client.Get(ctx, key, &f)
	if apierrors.IsNotFound(err) || (err == nil && f.DeletionTimestamp != nil) {
		return nil
	}
	return fmt.Errorf("observed Formation still there (%v)", err)
}
