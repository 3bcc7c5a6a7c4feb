package controllers

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/store"
)

// The decisions every reconcile makes, each in one place: what a reconcile
// does with a Formation, and how a reconcile ends. Whether a status is ahead
// of the projection is the stamp rule's (store.Ahead).

// formationAction is what a reconcile does with the Formation at a key.
type formationAction int

const (
	// nothingHere: no Formation, and none of the stream belongs here.
	nothingHere formationAction = iota
	// wait: the decision rests on facts not yet known (the fold has not
	// settled); nothing is written, and it is tried again.
	wait
	// awaitStream: a Formation that holds no projection, such as a declared
	// one before any event of its id, is marked as waiting for the stream.
	awaitStream
	// giveWay: an observed Formation whose id a declared one holds, or that
	// may not follow it, is deleted.
	giveWay
	// refuseTakeover: a Formation labelled with a formation it may not
	// follow (another namespace's, or a deleted one) is stalled, and the
	// projection stays where it is.
	refuseTakeover
	// mirror: the Formation holds its formation's projection; it is created
	// when missing and its status written.
	mirror
)

// decideFormation decides, for the Formation f at key (nil when there is
// none), labelled with or placed for id (empty when neither), from where
// placement puts id and its rules, and whether the projection has settled
// (Config.settled) or at least loaded its tombstones. Adopt or wait: a
// declared Formation takes an id over from an observed one, and a second
// declared one of an id waits while the first keeps it; no Formation takes
// over another namespace's formation. Two decisions need not wait for the
// projection to settle: where there is no Formation and none belongs
// (nothingHere), nothing is done, and a Formation that holds its projection
// mirrors it, though a missing one is created only once the tombstones are
// loaded, so that a deleted formation is not brought back. Every other
// decision waits until the projection has settled.
func decideFormation(f *cellosv1.Formation, id string, key client.ObjectKey, p placement, settled, tombstonesLoaded bool) formationAction {
	holds := id != "" && p.key == key && p.rules.projected
	switch {
	case f == nil && !holds:
		return nothingHere
	case f == nil && !tombstonesLoaded:
		return wait
	case holds:
		return mirror
	case !settled:
		return wait
	case id == "":
		return awaitStream
	case !p.rules.mayFollow(f) && f.Spec == nil:
		return giveWay
	case !p.rules.mayFollow(f) && p.rules.claimed():
		return refuseTakeover
	case p.key != key && f.Spec == nil:
		return giveWay
	}
	return awaitStream
}

var objectsRefusedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cellos_operator_objects_refused_total",
	Help: "Objects whose projection the API server refused for good and the operator moved past, by kind.",
}, []string{"kind"})

var nameCollisionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cellos_operator_name_collisions_total",
	Help: "Projections refused because their id meets another id's object name, and moved past, by kind.",
}, []string{"kind"})

var quotaRefusalsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cellos_operator_quota_refusals_total",
	Help: "Objects whose creation a ResourceQuota refused, counted once per wait for room, by kind.",
}, []string{"kind"})

func init() {
	metrics.Registry.MustRegister(objectsRefusedTotal, nameCollisionsTotal, quotaRefusalsTotal)
}

// conflictRetry is how soon a write that lost a race is tried again.
const conflictRetry = 100 * time.Millisecond

// quotaRetry is how soon a create a ResourceQuota refused is tried again.
// Nothing the operator watches tells when room returns (an object deleted, a
// quota raised), so it polls; at a fixed pace rather than with backoff, so
// that the cursor moves on soon after. The cost stays bounded: at most
// --max-unflushed-objects objects wait.
const quotaRetry = 10 * time.Second

// settlement is how one reconcile of a projected object ends. The zero
// settlement is that of a reconcile that writes no projection (a Formation
// held, refused or giving way, or no object of the stream at all): it
// counts no event as written, but loses a race as quietly as any other.
type settlement struct {
	// stream is the stream the projection was read from.
	stream store.Stream
	ref    store.Ref
	// seq is the sequence the projection was read at.
	seq uint64
	// obj is what a Warning Event is about.
	obj client.Object
}

// projects tells whether the reconcile writes a projection: every settlement
// but the zero one names the object it is of.
func (s settlement) projects() bool { return s.ref.Kind != "" }

// quotaWaits are the objects waiting for a ResourceQuota to make room for
// them, so that each wait raises one Warning Event and one count, however
// many times it is retried.
type quotaWaits struct {
	mu   sync.Mutex
	refs map[store.Ref]struct{}
}

func newQuotaWaits() *quotaWaits {
	return &quotaWaits{refs: map[store.Ref]struct{}{}}
}

// begin records that ref waits, and tells whether it did not already.
func (w *quotaWaits) begin(ref store.Ref) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, waiting := w.refs[ref]
	w.refs[ref] = struct{}{}
	return !waiting
}

// end records that ref no longer waits.
func (w *quotaWaits) end(ref store.Ref) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.refs, ref)
}

// settle ends every reconcile, with res and err. A lost race (conflict,
// already exists) is retried quietly on fresh data, whatever the reconcile
// did: it means the cache was behind, not that anything failed. A reconcile
// that writes no projection (the zero settlement) ends otherwise with res and
// err as they are. For one that does, the object's events up to seq count as
// written when err is nil, and when the API server refuses the object for
// good: retrying cannot help, and the cursor must not wait forever. A
// refusal is logged, counted, and raised as a Warning Event. A create over a
// ResourceQuota is retried every quotaRetry, its events still unwritten, and
// the wait logged, counted and raised as a Warning Event once. Any other
// error is returned, to be retried with backoff.
func (c Config) settle(ctx context.Context, s settlement, res ctrl.Result, err error) (ctrl.Result, error) {
	switch {
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	case !s.projects():
		return res, err
	case exceedsQuota(err):
		if c.quotaWaits.begin(s.ref) {
			ctrl.LoggerFrom(ctx).Info("A ResourceQuota refuses to create this object; waiting for room", "sequence", s.seq, "error", err.Error())
			quotaRefusalsTotal.WithLabelValues(string(s.ref.Kind)).Inc()
			c.Recorder.Eventf(s.obj, nil, corev1.EventTypeWarning, cellosv1.QuotaExceededReason, "Create",
				"A ResourceQuota refused to create the object for stream sequence %d; retrying every %s until there is room: %v", s.seq, quotaRetry, err)
		}
		return ctrl.Result{RequeueAfter: quotaRetry}, nil
	case err != nil && !refusedForGood(err):
		return ctrl.Result{}, err
	case err != nil:
		ctrl.LoggerFrom(ctx).Error(err, "The API server refuses this object's projection; moving on", "sequence", s.seq)
		objectsRefusedTotal.WithLabelValues(string(s.ref.Kind)).Inc()
		// Lost when the object's namespace is gone; the log and the metric stay.
		c.Recorder.Eventf(s.obj, nil, corev1.EventTypeWarning, cellosv1.ProjectionRefusedReason, "Project",
			"The API server refused the projection up to stream sequence %d: %v", s.seq, err)
	}
	c.reflected(s.stream, s.ref, s.seq)
	return res, nil
}

// reflected ends ref's events up to seq of stream: they count as reflected
// in status, so that the watermark may pass them, and any wait for quota
// ends with them. It is the one place an object's events end: a reconcile
// that wrote them or had them refused for good (settle), a cell refused for
// a name another holds (refuseCollision), and, from the map functions
// (the lagging ones, and formationsOfID through holder), an object that
// lives nowhere (no reconcile will ever be queued for it) and a Cell the
// replay finds already written.
func (c Config) reflected(stream store.Stream, ref store.Ref, seq uint64) {
	c.quotaWaits.end(ref)
	c.Store.Flushed(stream, ref, seq)
}

// exceedsQuota tells whether a ResourceQuota refused a create. The quota
// admission plugin answers 403 Forbidden with no reason or cause of its own,
// so only its message ("exceeded quota: …") tells it apart from RBAC.
func exceedsQuota(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota")
}

// refusedForGood tells whether the API server will refuse a write every time
// it is tried: an invalid object, one over a size limit, or a namespace that
// is gone or terminating.
func refusedForGood(err error) bool {
	if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || tooLarge(err) ||
		apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
		return true
	}
	var apiStatus apierrors.APIStatus
	if apierrors.IsNotFound(err) && errors.As(err, &apiStatus) {
		details := apiStatus.Status().Details
		return details != nil && details.Kind == "namespaces"
	}
	return false
}

// tooLarge tells whether an object is over a size limit. The API server says
// so with 413 above its request limit (3 MiB), but below that etcd's own
// limits come back as an internal error that only its message tells apart.
func tooLarge(err error) bool {
	if apierrors.IsRequestEntityTooLargeError(err) {
		return true
	}
	var apiStatus apierrors.APIStatus
	if !errors.As(err, &apiStatus) || apiStatus.Status().Code != http.StatusInternalServerError {
		return false
	}
	msg := apiStatus.Status().Message
	return strings.Contains(msg, "request is too large") || strings.Contains(msg, "trying to send message larger than max")
}
