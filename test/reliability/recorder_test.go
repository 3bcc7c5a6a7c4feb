package reliability

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
)

// recorder watches the Formations, Cells and cursor ConfigMap of one
// namespace for the whole run and keeps every status and cursor value it
// sees, in order. check then tells, once every stream of the run is known,
// whether any lastAppliedSequence or cursor went backwards within one stream,
// whether an object ever changed the id it holds, and whether any status
// carries a stamp of no stream of the run.
//
// A watch that breaks (the API server stopped) resumes from the last
// resourceVersion it saw, or lists again when that is too old: a value
// written and overwritten while no watch was open is not seen, but nothing
// is written while the API server is away.
type recorder struct {
	ns     string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	streams []store.Stream
	objects map[types.UID]*objectLog
	cursors []cursorValue
	// restarts counts the watches that broke and were opened again.
	restarts int
	// blind are the revision ranges in which a watch may have missed
	// values: between its last value and the list that followed a watch
	// too old to resume.
	blind [][2]int64

	// statusChanges counts the status values seen that differ from the
	// object's previous one; lastSeq and cursorSeq are the highest seen.
	statusChanges atomic.Int64
	lastSeq       atomic.Int64
	cursorSeq     atomic.Int64
	cursorCommits atomic.Int64

	// allowCounts leaves cell counts that went backwards to the test: a
	// resync after a purge may turn a Destroyed Cell back to Pending.
	allowCounts bool
}

// objectLog is what the recorder saw of one object.
type objectLog struct {
	kind store.Kind
	name string
	obs  []observation
}

type observation struct {
	id    string
	seq   int64
	stamp string
	at    time.Time
	// rv is the object's resourceVersion: etcd's revision, which orders
	// writes across objects.
	rv int64
	// counts are a Formation's cell counts.
	counts cellosv1.CellCounts
}

// cursorValue is one value of the cursor ConfigMap, and its revision.
type cursorValue struct {
	cursor.Position
	rv int64
}

// record starts a recorder for ns; the test stops it with check.
func record(tb testing.TB, ns string) *recorder {
	tb.Helper()
	c, err := client.NewWithWatch(cp.Config, client.Options{Scheme: cp.Scheme})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{ns: ns, cancel: cancel, objects: map[types.UID]*objectLog{}}
	lists := []struct {
		list client.ObjectList
		opts []client.ListOption
	}{
		{&cellosv1.FormationList{}, []client.ListOption{client.InNamespace(ns)}},
		{&cellosv1.CellList{}, []client.ListOption{client.InNamespace(ns)}},
		{&corev1.ConfigMapList{}, []client.ListOption{client.InNamespace(ns), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", harness.CursorName)}}},
	}
	for _, l := range lists {
		r.wg.Go(func() { r.watch(ctx, c, l.list, l.opts) })
	}
	tb.Cleanup(r.stop)
	return r
}

func (r *recorder) stop() {
	r.cancel()
	r.wg.Wait()
}

// addStream makes a stream of the run known, for check to attribute stamps.
func (r *recorder) addStream(s store.Stream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, known := range r.streams {
		if known.Name == s.Name && known.Created.Equal(s.Created) {
			return
		}
	}
	r.streams = append(r.streams, s)
}

// watch lists and watches one kind until ctx ends.
func (r *recorder) watch(ctx context.Context, c client.WithWatch, list client.ObjectList, opts []client.ListOption) {
	rv, relist := "", true
	for ctx.Err() == nil {
		if relist {
			l := list.DeepCopyObject().(client.ObjectList)
			if err := c.List(ctx, l, opts...); err != nil {
				sleep(ctx, 200*time.Millisecond)
				continue
			}
			items, _ := extractItems(l)
			for _, obj := range items {
				r.observe(obj)
			}
			if rv != "" {
				// Values written and overwritten between the last one seen and
				// this list were missed.
				from, _ := strconv.ParseInt(rv, 10, 64)
				to, _ := strconv.ParseInt(l.GetResourceVersion(), 10, 64)
				r.mu.Lock()
				r.blind = append(r.blind, [2]int64{from, to})
				r.mu.Unlock()
			}
			rv = l.GetResourceVersion()
		}
		raw := &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}}
		w, err := c.Watch(ctx, list.DeepCopyObject().(client.ObjectList), append(append([]client.ListOption(nil), opts...), raw)...)
		if err != nil {
			relist = apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		rv, relist = r.drain(w, rv)
		w.Stop()
		r.mu.Lock()
		r.restarts++
		r.mu.Unlock()
	}
}

// drain records a watch's events until it ends, and returns the
// resourceVersion to resume from, and whether it is too old to.
func (r *recorder) drain(w watch.Interface, rv string) (string, bool) {
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added, watch.Modified:
			obj := ev.Object.(client.Object)
			r.observe(obj)
			rv = obj.GetResourceVersion()
		case watch.Bookmark, watch.Deleted:
			if obj, ok := ev.Object.(client.Object); ok {
				rv = obj.GetResourceVersion()
			}
		case watch.Error:
			s, ok := ev.Object.(*metav1.Status)
			return rv, ok && s.Code == http.StatusGone
		}
	}
	return rv, false
}

func extractItems(l client.ObjectList) ([]client.Object, error) {
	var out []client.Object
	switch l := l.(type) {
	case *cellosv1.FormationList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *cellosv1.CellList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.ConfigMapList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	default:
		return nil, fmt.Errorf("unexpected list %T", l)
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// observe records one value of an object.
func (r *recorder) observe(obj runtime.Object) {
	now := time.Now()
	rv := func(o client.Object) int64 {
		n, _ := strconv.ParseInt(o.GetResourceVersion(), 10, 64)
		return n
	}
	switch o := obj.(type) {
	case *cellosv1.Formation:
		r.observeStatus(o.UID, store.FormationKind, o.Name, observation{id: o.Status.FormationID, seq: o.Status.LastAppliedSequence, stamp: o.Status.StreamStamp, at: now, rv: rv(o), counts: o.Status.CellCounts})
	case *cellosv1.Cell:
		r.observeStatus(o.UID, store.CellKind, o.Name, observation{id: o.Status.CellID, seq: o.Status.LastAppliedSequence, stamp: o.Status.StreamStamp, at: now, rv: rv(o)})
	case *corev1.ConfigMap:
		seq, err := strconv.ParseUint(o.Data[cursor.SequenceKey], 10, 64)
		if err != nil {
			return
		}
		created, _ := time.Parse(time.RFC3339Nano, o.Data[cursor.StreamCreatedKey])
		r.mu.Lock()
		r.cursors = append(r.cursors, cursorValue{Position: cursor.Position{Sequence: seq, Stream: o.Data[cursor.StreamKey], StreamCreated: created, LastGap: o.Data[cursor.LastGapKey]}, rv: rv(o)})
		r.mu.Unlock()
		r.cursorSeq.Store(int64(seq))
		r.cursorCommits.Add(1)
	}
}

func (r *recorder) observeStatus(uid types.UID, kind store.Kind, name string, o observation) {
	if o.seq == 0 {
		return // created, no status yet
	}
	r.mu.Lock()
	l := r.objects[uid]
	if l == nil {
		l = &objectLog{kind: kind, name: name}
		r.objects[uid] = l
	}
	changed := true
	if n := len(l.obs); n > 0 {
		last := l.obs[n-1]
		changed = last.id != o.id || last.seq != o.seq || last.stamp != o.stamp || last.counts != o.counts
	}
	if changed {
		l.obs = append(l.obs, o)
	}
	r.mu.Unlock()
	if changed {
		r.statusChanges.Add(1)
		for {
			cur := r.lastSeq.Load()
			if o.seq <= cur || r.lastSeq.CompareAndSwap(cur, o.seq) {
				break
			}
		}
	}
}

// verdict is what check found.
type verdict struct {
	// regressions are values that went backwards within one stream.
	regressions []string
	// counts are a Formation's cell counts gone backwards: fewer Cells, or
	// more Pending ones than new ones (a Cell is Pending only until its
	// first started event, and the operator deletes none).
	counts []string
	// other are the remaining violations: an object that changed its id, a
	// stamp of no stream of the run.
	other []string
	// changes is how many status values were seen.
	changes int
}

// check analyses everything recorded so far.
func (r *recorder) check() verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	var v verdict
	streamOf := func(kind store.Kind, o observation) int {
		for i, s := range r.streams {
			if store.Stamp(s, store.Ref{Kind: kind, ID: o.id}, uint64(o.seq)) == o.stamp {
				return i
			}
		}
		return -1
	}
	for _, l := range r.objects {
		high := map[int]observation{}
		for i, o := range l.obs {
			v.changes++
			if p := l.obs[max(i-1, 0)].counts; l.kind == store.FormationKind && i > 0 && p != o.counts &&
				(o.counts.Total < p.Total || o.counts.Pending-p.Pending > o.counts.Total-p.Total) {
				v.counts = append(v.counts, fmt.Sprintf("Formation %s cell counts went back from %+v to %+v (seen %s)",
					l.name, p, o.counts, o.at.Format("15:04:05.000")))
			}
			if i > 0 && l.obs[0].id != o.id {
				v.other = append(v.other, fmt.Sprintf("%s %s held id %.60q, then %.60q", l.kind, l.name, l.obs[0].id, o.id))
			}
			s := streamOf(l.kind, o)
			if s < 0 {
				v.other = append(v.other, fmt.Sprintf("%s %s at sequence %d has a stamp of no stream of the run", l.kind, l.name, o.seq))
				continue
			}
			if h, ok := high[s]; ok && o.seq < h.seq {
				v.regressions = append(v.regressions, fmt.Sprintf("%s %s went back from sequence %d (seen %s) to %d (seen %s)",
					l.kind, l.name, h.seq, h.at.Format("15:04:05.000"), o.seq, o.at.Format("15:04:05.000")))
			}
			if o.seq > high[s].seq {
				high[s] = o
			}
		}
	}
	high := map[string]uint64{}
	for _, p := range r.cursors {
		key := p.Stream + "@" + p.StreamCreated.Format(time.RFC3339Nano)
		if h, ok := high[key]; ok && p.Sequence < h {
			v.regressions = append(v.regressions, fmt.Sprintf("the cursor of stream %s went back from %d to %d", key, h, p.Sequence))
		}
		high[key] = max(high[key], p.Sequence)
	}
	return v
}

// mustHold fails the test on any violation, the cursor's promise against
// the stream snap of want included, and returns the count of regressions
// for the report.
func (r *recorder) mustHold(tb testing.TB, want harness.Expectation, snap harness.Snapshot) int {
	tb.Helper()
	v := r.check()
	v.other = append(v.other, r.cursorSound(want, snap)...)
	if !r.allowCounts {
		v.other = append(v.other, v.counts...)
	}
	for _, s := range harness.Head(v.regressions, 20) {
		tb.Errorf("regressed: %s", s)
	}
	for _, s := range harness.Head(v.other, 20) {
		tb.Errorf("violation: %s", s)
	}
	tb.Logf("watch: %d status values seen, %d cursor values, %d regressions", v.changes, r.cursorCommits.Load(), len(v.regressions))
	return len(v.regressions)
}

// cursorSound checks the cursor's promise against the watch: when the
// cursor of want's stream was committed at sequence c, every object's
// status, as it stood just before that commit (by etcd revision), already
// reflected every event at or below c. It checks at most 300 of the cursor
// values, spread over the run.
func (r *recorder) cursorSound(want harness.Expectation, snap harness.Snapshot) []string {
	applied := map[store.Ref][]int64{}
	_, outs := harness.Fold(snap.Messages)
	for _, out := range outs {
		if out.Result != fold.ResultApplied {
			continue
		}
		ref := store.Ref{Kind: store.CellKind, ID: out.CellID}
		if out.Family == fold.FamilyFormation {
			ref = store.Ref{Kind: store.FormationKind, ID: out.FormationID}
		}
		applied[ref] = append(applied[ref], int64(out.Seq))
	}

	r.mu.Lock()
	// Each ref's status values of want's stream, by revision.
	type point struct{ rv, seq int64 }
	seen := map[store.Ref][]point{}
	for _, l := range r.objects {
		for _, o := range l.obs {
			ref := store.Ref{Kind: l.kind, ID: o.id}
			if store.Stamp(want.Stream, ref, uint64(o.seq)) == o.stamp {
				seen[ref] = append(seen[ref], point{o.rv, o.seq})
			}
		}
	}
	var cursors []cursorValue
	for _, c := range r.cursors {
		inBlind := slices.ContainsFunc(r.blind, func(w [2]int64) bool { return c.rv > w[0] && c.rv <= w[1] })
		if c.Stream == want.Stream.Name && c.StreamCreated.Equal(want.Stream.Created) && c.Sequence > 0 && !inBlind {
			cursors = append(cursors, c)
		}
	}
	r.mu.Unlock()
	for ref, ps := range seen {
		slices.SortFunc(ps, func(a, b point) int { return int(a.rv - b.rv) })
		seen[ref] = ps
	}
	if step := len(cursors) / 300; step > 1 {
		var sampled []cursorValue
		for i := 0; i < len(cursors); i += step {
			sampled = append(sampled, cursors[i])
		}
		cursors = append(sampled, cursors[len(cursors)-1])
	}

	var bad []string
	for _, c := range cursors {
		for ref, seqs := range applied {
			// The last event of ref at or below the cursor.
			i, _ := slices.BinarySearch(seqs, int64(c.Sequence)+1)
			if i == 0 {
				continue
			}
			need := seqs[i-1]
			ps := seen[ref]
			j, _ := slices.BinarySearchFunc(ps, c.rv, func(p point, rv int64) int { return int(p.rv - rv) })
			var have int64
			if j > 0 {
				have = ps[j-1].seq
			}
			if have < need {
				bad = append(bad, fmt.Sprintf("cursor committed at %d (revision %d) while %s %.60q had status at %d, not %d",
					c.Sequence, c.rv, ref.Kind, ref.ID, have, need))
			}
		}
	}
	slices.Sort(bad)
	return bad
}
