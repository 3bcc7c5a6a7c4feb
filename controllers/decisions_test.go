package controllers

import (
	"context"
	"errors"
	"net/http"
	ctrl "sigs.k8s.io/controller-runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
)

// Table tests of the decisions a reconcile makes, without an API server.

const idX = "02daa0b3-49a7-a4bf-8050-cbb812881d4e"

func formation(ns, name string, declared bool, age time.Duration) cellosv1.Formation {
	f := cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name,
		Labels:            map[string]string{cellosv1.FormationIDLabel: idX},
		CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(-age)),
	}}
	if declared {
		f.Spec = &cellosv1.FormationSpec{}
	}
	return f
}

// owner is a declared Formation the operator admitted: its label is its uid.
func owner(ns, name string, age time.Duration) cellosv1.Formation {
	f := formation(ns, name, true, age)
	f.UID = idX
	return f
}

func TestPlaceFormation(t *testing.T) {
	deleting := formation("cellos", "going", true, time.Hour)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	cases := map[string]struct {
		labelled []cellosv1.Formation
		want     client.ObjectKey
	}{
		"none: its own Formation in the default namespace": {
			want: client.ObjectKey{Namespace: "cellos", Name: idX},
		},
		"the observed one": {
			labelled: []cellosv1.Formation{formation("cellos", idX, false, 0)},
			want:     client.ObjectKey{Namespace: "cellos", Name: idX},
		},
		"a declared one before an older observed one": {
			labelled: []cellosv1.Formation{formation("cellos", idX, false, time.Hour), formation("cellos", "research", true, 0)},
			want:     client.ObjectKey{Namespace: "cellos", Name: "research"},
		},
		"the oldest of two declared": {
			labelled: []cellosv1.Formation{formation("cellos", "young", true, 0), formation("cellos", "old", true, time.Hour)},
			want:     client.ObjectKey{Namespace: "cellos", Name: "old"},
		},
		"by key when as old": {
			labelled: []cellosv1.Formation{formation("cellos", "y", true, 0), formation("cellos", "x", true, 0)},
			want:     client.ObjectKey{Namespace: "cellos", Name: "x"},
		},
		"one being deleted still holds it, until it lets go": {
			labelled: []cellosv1.Formation{deleting, formation("cellos", idX, false, 0)},
			want:     client.ObjectKey{Namespace: "cellos", Name: "going"},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := placeFormation(idX, c.labelled, formationRules{namespace: "cellos"}); got != c.want {
				t.Errorf("placed at %s, want %s", got, c.want)
			}
		})
	}
}

func TestPlaceCell(t *testing.T) {
	written := func(ns, name, id string) cellosv1.Cell {
		return cellosv1.Cell{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Status:     cellosv1.CellStatus{CellID: id, LastAppliedSequence: 3},
		}
	}
	cases := map[string]struct {
		id    string
		named []cellosv1.Cell
		want  client.ObjectKey
	}{
		"new: beside its formation": {
			id: "cell-0", want: client.ObjectKey{Namespace: "team-a", Name: "cell-0"},
		},
		"a Cell never moves": {
			id: "cell-0", named: []cellosv1.Cell{written("cellos", "cell-0", "cell-0")},
			want: client.ObjectKey{Namespace: "cellos", Name: "cell-0"},
		},
		"the empty id is an id": {
			id: "", named: []cellosv1.Cell{written("cellos", "cell-e3b0c44298", "")},
			want: client.ObjectKey{Namespace: "cellos", Name: "cell-e3b0c44298"},
		},
		"a Cell never written names no id": {
			id: "", named: []cellosv1.Cell{{ObjectMeta: metav1.ObjectMeta{Namespace: "cellos", Name: "stray"}}},
			want: client.ObjectKey{Namespace: "team-a", Name: store.ObjectName("")},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := placeCell(c.id, c.named, func() (string, error) { return "team-a", nil })
			if err != nil || got != c.want {
				t.Errorf("placed at %s (%v), want %s", got, err, c.want)
			}
		})
	}
}

func TestAhead(t *testing.T) {
	stream := store.Stream{Name: "CELLOS_EVENTS", Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	recreated := store.Stream{Name: stream.Name, Created: stream.Created.Add(time.Hour)}
	ref := store.Ref{Kind: store.CellKind, ID: "cell-0"}
	cases := map[string]struct {
		statusSequence int64
		stamp          string
		ahead          bool
	}{
		"a replica further along the same stream wrote it": {4053, store.Stamp(stream, ref, 4053), true},
		"behind the projection":                            {700, store.Stamp(stream, ref, 700), false},
		"at the projection":                                {795, store.Stamp(stream, ref, 795), false},
		"at the projection, from a recreated stream":       {795, store.Stamp(recreated, ref, 795), false},
		"written from a recreated stream":                  {4053, store.Stamp(recreated, ref, 4053), false},
		"a sequence raised by hand":                        {9999, store.Stamp(stream, ref, 4053), false},
		"never stamped":                                    {4053, "", false},
		"another object's stamp":                           {4053, store.Stamp(stream, store.Ref{Kind: store.CellKind, ID: "cell-1"}, 4053), false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := store.Ahead(stream, ref, 795, c.statusSequence, c.stamp); got != c.ahead {
				t.Errorf("ahead = %v, want %v", got, c.ahead)
			}
		})
	}
}

func TestSettle(t *testing.T) {
	nsGone := apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "gone")
	terminating := apierrors.NewForbidden(cellsGR, "c", errors.New("namespace is terminating"))
	terminating.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: corev1.NamespaceTerminatingCause}}
	tooLarge := apierrors.NewRequestEntityTooLargeError("limit is 3145728")
	overQuota := quotaRefusal()
	rbac := apierrors.NewForbidden(cellsGR, "c", errors.New(`User "system:serviceaccount:cellos:cellos-operator" cannot create resource "cells"`))
	// As the API server returns etcd's errors: code 500, no reason.
	internal := func(msg string) error {
		return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Message: msg}}
	}
	cases := map[string]struct {
		err       error
		flushed   bool
		requeue   bool
		returned  bool
		refusedEv bool
	}{
		"written":                     {err: nil, flushed: true},
		"a lost race retries quietly": {err: apierrors.NewConflict(cellsGR, "c", errors.New("changed")), requeue: true},
		"created meanwhile":           {err: apierrors.NewAlreadyExists(cellsGR, "c"), requeue: true},
		"invalid: refused for good":   {err: apierrors.NewInvalid(cellosv1.GroupVersion.WithKind("Cell").GroupKind(), "c", nil), flushed: true, refusedEv: true},
		"too large: refused for good": {err: tooLarge, flushed: true, refusedEv: true},
		"etcd's size limit":           {err: internal("etcdserver: request is too large"), flushed: true, refusedEv: true},
		"etcd's message limit":        {err: internal("rpc error: code = ResourceExhausted desc = trying to send message larger than max (2097602 vs. 2097152)"), flushed: true, refusedEv: true},
		"another internal error":      {err: internal("etcdserver: leader changed"), returned: true},
		"namespace gone":              {err: nsGone, flushed: true, refusedEv: true},
		"over quota: waits for room":  {err: overQuota, requeue: true, refusedEv: true},
		"forbidden by RBAC":           {err: rbac, returned: true},
		"namespace terminating":       {err: terminating, flushed: true, refusedEv: true},
		"the Cell itself not found":   {err: apierrors.NewNotFound(cellsGR, "c"), returned: true},
		"an outage is retried":        {err: apierrors.NewServiceUnavailable("etcd is down"), returned: true},
		"a timeout is retried":        {err: apierrors.NewTimeoutError("slow", 1), returned: true},
		"throttled is retried":        {err: apierrors.NewTooManyRequests("slow down", 1), returned: true},
		"an unknown error is retried": {err: errors.New("connection refused"), returned: true},
		"a generic 500 is retried":    {err: apierrors.NewGenericServerResponse(http.StatusInternalServerError, "update", cellsGR, "c", "boom", 0, true), returned: true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := store.New(0, "", 0, fold.TTLs{})
			s.Apply(context.Background(), 1, time.Time{}, "", nil, []byte(`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"c"}}`))
			recorder := events.NewFakeRecorder(1)
			cfg := Config{Store: s, Recorder: recorder, quotaWaits: newQuotaWaits()}
			ref := store.Ref{Kind: store.CellKind, ID: "c"}
			res, err := cfg.settle(context.Background(), settlement{stream: s.Stream(), ref: ref, seq: 1, obj: &cellosv1.Cell{}}, ctrl.Result{}, c.err)
			if flushed := s.Watermark() == 1; flushed != c.flushed {
				t.Errorf("flushed = %v, want %v", flushed, c.flushed)
			}
			if requeue := res.RequeueAfter > 0; requeue != c.requeue {
				t.Errorf("requeue = %v, want %v", requeue, c.requeue)
			}
			if returned := err != nil; returned != c.returned {
				t.Errorf("returned error = %v, want %v", err, c.returned)
			}
			if refused := len(recorder.Events) == 1; refused != c.refusedEv {
				t.Errorf("Warning Event raised = %v, want %v", refused, c.refusedEv)
			}
		})
	}
}

var cellsGR = schema.GroupResource{Group: cellosv1.GroupVersion.Group, Resource: "cells"}

// quotaRefusal is what the API server answers a create over a ResourceQuota.
func quotaRefusal() error {
	return apierrors.NewForbidden(cellsGR, "c", errors.New("exceeded quota: cells, requested: count/cells.cellos.dev=1, used: count/cells.cellos.dev=3, limited: count/cells.cellos.dev=3"))
}

// A create a ResourceQuota keeps refusing raises one Warning Event and one
// count per wait for room, not one per retry.
func TestQuotaWarningOncePerWait(t *testing.T) {
	s := store.New(0, "", 0, fold.TTLs{})
	s.Apply(context.Background(), 1, time.Time{}, "", nil, []byte(`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"c"}}`))
	recorder := events.NewFakeRecorder(10)
	cfg := Config{Store: s, Recorder: recorder, quotaWaits: newQuotaWaits()}
	done := settlement{stream: s.Stream(), ref: store.Ref{Kind: store.CellKind, ID: "c"}, seq: 1, obj: &cellosv1.Cell{}}
	before := testutil.ToFloat64(quotaRefusalsTotal.WithLabelValues("Cell"))
	waitFor := func(retries int) {
		for range retries {
			if res, err := cfg.settle(context.Background(), done, ctrl.Result{}, quotaRefusal()); err != nil || res.RequeueAfter != quotaRetry {
				t.Fatalf("settled with %v, %v; want a retry after %s", res, err, quotaRetry)
			}
		}
	}
	waitFor(3)
	if _, err := cfg.settle(context.Background(), done, ctrl.Result{}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(2) // a second wait, after the object was written
	if got := len(recorder.Events); got != 2 {
		t.Errorf("%d Warning Events, want one per wait: 2", got)
	}
	if got := testutil.ToFloat64(quotaRefusalsTotal.WithLabelValues("Cell")) - before; got != 2 {
		t.Errorf("quota refusals counted %v, want one per wait: 2", got)
	}
}

func TestDecideFormation(t *testing.T) {
	here := client.ObjectKey{Namespace: "team-a", Name: "research"}
	elsewhere := client.ObjectKey{Namespace: "team-b", Name: "older"}
	declared, observed := formation("team-a", "research", true, 0), formation("team-a", "research", false, 0)
	ours := formationRules{namespace: "team-a", projected: true}
	theirs := formationRules{namespace: "cellos", projected: true, ownerNamespace: "team-b"}
	unnamed := formationRules{namespace: "cellos"}
	cases := map[string]struct {
		f            *cellosv1.Formation
		id           string
		placed       placement
		unsettled    bool
		noTombstones bool
		want         formationAction
	}{
		"a takeover of another namespace's formation":         {f: &declared, id: idX, placed: placement{elsewhere, theirs}, want: refuseTakeover},
		"a deleted formation is followed by none":             {f: &declared, id: idX, placed: placement{client.ObjectKey{}, formationRules{namespace: "cellos", deleted: true}}, want: refuseTakeover},
		"an observed one that may not follow gives way":       {f: &observed, id: idX, placed: placement{elsewhere, theirs}, want: giveWay},
		"no Formation, and none of the stream here":           {f: nil, id: "", placed: placement{key: here}, want: nothingHere},
		"no Formation: the stream's goes elsewhere":           {f: nil, id: idX, placed: placement{elsewhere, ours}, want: nothingHere},
		"no Formation, its id not yet in the stream":          {f: nil, id: idX, placed: placement{here, formationRules{namespace: "team-a"}}, want: nothingHere},
		"no Formation: the stream's is created here":          {f: nil, id: idX, placed: placement{here, ours}, want: mirror},
		"none is created before the tombstones are loaded":    {f: nil, id: idX, placed: placement{here, ours}, noTombstones: true, want: wait},
		"an unlabelled declared Formation waits":              {f: &declared, id: "", placed: placement{key: here}, want: awaitStream},
		"declared before its first event waits":               {f: &declared, id: idX, placed: placement{here, formationRules{namespace: "team-a"}}, want: awaitStream},
		"one that may not follow an unnamed formation waits":  {f: &declared, id: idX, placed: placement{here, unnamed}, want: awaitStream},
		"declared, holding its projection, mirrors it":        {f: &declared, id: idX, placed: placement{here, ours}, want: mirror},
		"observed, holding its projection, mirrors it":        {f: &observed, id: idX, placed: placement{here, ours}, want: mirror},
		"observed gives way to a declared one":                {f: &observed, id: idX, placed: placement{elsewhere, ours}, want: giveWay},
		"a second declared Formation of one id waits":         {f: &declared, id: idX, placed: placement{elsewhere, ours}, want: awaitStream},
		"a partial fold mirrors what it holds":                {f: &declared, id: idX, placed: placement{here, ours}, unsettled: true, want: mirror},
		"a partial fold refuses nothing":                      {f: &declared, id: idX, placed: placement{elsewhere, theirs}, unsettled: true, want: wait},
		"a partial fold deletes nothing":                      {f: &observed, id: idX, placed: placement{elsewhere, ours}, unsettled: true, want: wait},
		"a partial fold writes no status it does not project": {f: &declared, id: idX, placed: placement{here, unnamed}, unsettled: true, want: wait},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := decideFormation(c.f, c.id, here, c.placed, !c.unsettled, !c.noTombstones); got != c.want {
				t.Errorf("decided %d, want %d", got, c.want)
			}
		})
	}
}

func TestPlaceFormationAcrossNamespaces(t *testing.T) {
	team := formation("team-a", "research", true, time.Hour)
	other := formation("team-b", "mine-now", true, 2*time.Hour)
	inOperator := formation("cellos", "adopted", true, 3*time.Hour)
	admitted := owner("team-a", "declared", 0)
	copied := formation("team-a", "copy", true, time.Hour)
	nowhere := client.ObjectKey{}
	cases := map[string]struct {
		labelled []cellosv1.Formation
		rules    formationRules
		want     client.ObjectKey
	}{
		"before the stream names it, only the operator's namespace takes it": {
			labelled: []cellosv1.Formation{other, inOperator},
			rules:    formationRules{namespace: "cellos"},
			want:     client.ObjectKeyFromObject(&inOperator),
		},
		"the namespace of its created event": {
			labelled: []cellosv1.Formation{other, team},
			rules:    formationRules{namespace: "cellos", projected: true, declaredIn: "team-a"},
			want:     client.ObjectKeyFromObject(&team),
		},
		"the operator's namespace, for a formation declared nowhere": {
			labelled: []cellosv1.Formation{other, inOperator},
			rules:    formationRules{namespace: "cellos", projected: true},
			want:     client.ObjectKeyFromObject(&inOperator),
		},
		"not the operator's namespace, for one declared elsewhere": {
			labelled: []cellosv1.Formation{inOperator},
			rules:    formationRules{namespace: "cellos", projected: true, declaredIn: "team-a"},
			want:     nowhere,
		},
		"another namespace never takes it over": {
			labelled: []cellosv1.Formation{other},
			rules:    formationRules{namespace: "cellos", projected: true},
			want:     client.ObjectKey{Namespace: "cellos", Name: idX},
		},
		"its owner, before an older copy, whatever the stream forgot": {
			labelled: []cellosv1.Formation{inOperator, copied, admitted},
			rules:    formationRules{namespace: "cellos", ownerNamespace: "team-a"},
			want:     client.ObjectKeyFromObject(&admitted),
		},
		"declared in a namespace and gone: nowhere": {
			labelled: []cellosv1.Formation{other},
			rules:    formationRules{namespace: "cellos", projected: true, declaredIn: "team-a"},
			want:     nowhere,
		},
		"deleted: nowhere, even for the operator's namespace": {
			labelled: []cellosv1.Formation{inOperator},
			rules:    formationRules{namespace: "cellos", deleted: true},
			want:     nowhere,
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := placeFormation(idX, c.labelled, c.rules); got != c.want {
				t.Errorf("placed at %s, want %s", got, c.want)
			}
		})
	}
}
