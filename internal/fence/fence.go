// Package fence keeps a leader whose Lease may have passed to another
// replica from writing.
//
// Leader election alone does not: a leader paused past its Lease (a long
// garbage collection, a frozen node, SIGSTOP) resumes believing it leads
// until its next renewal fails, and meanwhile writes what it folded before
// the pause over what the new leader wrote since. The fence wraps the Lease
// lock that the elector renews through, so it knows when the last renewal
// was sent, and refuses every write through its client once the Lease may
// have expired by then. No replica can take the Lease over before that: a
// standby waits a whole lease duration after it sees the last renewal,
// which it cannot see before the renewal was sent.
//
// Only writes through the client that Client wraps are fenced. Kubernetes
// Events go through the event recorder's own client, and the operator's NATS
// publishes and tombstones do not reach the API server at all: a paused
// leader may still send those, which is why they are built to be harmless
// when repeated or late.
package fence

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// ErrLeaseLost is returned, wrapped, for a write refused by the fence.
var ErrLeaseLost = errors.New("the Lease may have passed to another replica")

// transitMargin is taken off the end of a Lease of duration lease: a write
// allowed just before it still has to reach the API server. A quarter of
// the lease, and at most 2s: a short lease, renewed often, still leaves the
// leader most of it to write in after each renewal, and a long one keeps
// the margin that requests on a busy API server need.
func transitMargin(lease time.Duration) time.Duration {
	return min(2*time.Second, lease/4)
}

// Fence is a resourcelock.Interface, for the manager's leader election, that
// records each renewal it passes on.
type Fence struct {
	resourcelock.Interface
	clock clock.PassiveClock

	mu    sync.Mutex
	until time.Time // writes are allowed before it; zero when not leading
	// readHolder is who held the Lease when it was last read.
	readHolder string
}

// New fences writes behind lock's renewals.
func New(lock resourcelock.Interface, clk clock.PassiveClock) *Fence {
	return &Fence{Interface: lock, clock: clk}
}

// Create acquires the Lease when no one holds it yet.
func (f *Fence) Create(ctx context.Context, record resourcelock.LeaderElectionRecord) error {
	sent := f.clock.Now()
	err := f.Interface.Create(ctx, record)
	f.renewed(sent, record, err)
	return err
}

// Get reads the Lease, and remembers who holds it, for a release.
func (f *Fence) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	record, raw, err := f.Interface.Get(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readHolder = ""
	if err == nil {
		f.readHolder = record.HolderIdentity
	}
	return record, raw, err
}

// Update acquires, renews or releases the Lease. A release (a record with
// no holder) is written only if the Lease, as the elector read it just
// before, is this replica's: client-go releases on the holder it last
// observed, not the one it has just read, so a leader that lost the Lease
// unawares (paused, or cut off) would release another replica's Lease on
// its way out, and let a third take it while the second still leads. The
// write carries the resourceVersion of that read, so a holder that changed
// since fails it as a conflict, and the elector reads again. A release not
// written still closes the fence.
func (f *Fence) Update(ctx context.Context, record resourcelock.LeaderElectionRecord) error {
	sent := f.clock.Now()
	if record.HolderIdentity == "" && !f.readOwn() {
		f.renewed(sent, record, nil)
		return nil
	}
	err := f.Interface.Update(ctx, record)
	f.renewed(sent, record, err)
	return err
}

// readOwn tells whether the Lease was this replica's when last read.
func (f *Fence) readOwn() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readHolder == f.Identity()
}

// renewed records a write of the Lease record sent at sent. A failed write
// leaves the fence as it was: the Lease stays this replica's until it
// expires, and no longer.
func (f *Fence) renewed(sent time.Time, record resourcelock.LeaderElectionRecord, err error) {
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if record.HolderIdentity != f.Identity() {
		f.until = time.Time{} // released
		return
	}
	lease := time.Duration(record.LeaseDurationSeconds) * time.Second
	f.until = sent.Add(lease - transitMargin(lease))
}

// Check returns nil while this replica surely holds the Lease.
func (f *Fence) Check() error {
	f.mu.Lock()
	until := f.until
	f.mu.Unlock()
	if until.IsZero() {
		return fmt.Errorf("not writing: %w: this replica does not hold it", ErrLeaseLost)
	}
	if now := f.clock.Now(); !now.Before(until) {
		return fmt.Errorf("not writing: %w: its last renewal by this replica lapsed %s ago", ErrLeaseLost, now.Sub(until).Round(time.Millisecond))
	}
	return nil
}

// Client returns c with every write checked against the fence first. Reads
// pass through.
func (f *Fence) Client(c client.WithWatch) client.WithWatch {
	return interceptor.NewClient(c, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			return f.then(func() error { return c.Create(ctx, obj, opts...) })
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			return f.then(func() error { return c.Update(ctx, obj, opts...) })
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			return f.then(func() error { return c.Patch(ctx, obj, patch, opts...) })
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			return f.then(func() error { return c.Apply(ctx, obj, opts...) })
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			return f.then(func() error { return c.Delete(ctx, obj, opts...) })
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			return f.then(func() error { return c.DeleteAllOf(ctx, obj, opts...) })
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, subObj client.Object, opts ...client.SubResourceCreateOption) error {
			return f.then(func() error { return c.SubResource(sub).Create(ctx, obj, subObj, opts...) })
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return f.then(func() error { return c.SubResource(sub).Update(ctx, obj, opts...) })
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			return f.then(func() error { return c.SubResource(sub).Patch(ctx, obj, patch, opts...) })
		},
		SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
			return f.then(func() error { return c.SubResource(sub).Apply(ctx, obj, opts...) })
		},
	})
}

// then runs write if the fence allows it.
func (f *Fence) then(write func() error) error {
	if err := f.Check(); err != nil {
		fencedWritesTotal.Inc()
		return err
	}
	return write()
}

var fencedWritesTotal = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "cellos_operator_fenced_writes_total",
	Help: "Writes refused because this replica's Lease may have passed to another: it was paused or cut off past the lease duration.",
})

func init() {
	metrics.Registry.MustRegister(fencedWritesTotal)
}
