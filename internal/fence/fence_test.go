package fence

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// lock stands in for the Lease: it holds its holder, and fails when told.
type lock struct {
	resourcelock.Interface
	fail   error
	holder string
}

func (l *lock) Identity() string { return "me" }
func (l *lock) Get(context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r := record(l.holder)
	return &r, nil, l.fail
}
func (l *lock) Create(_ context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.write(r)
}
func (l *lock) Update(_ context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.write(r)
}
func (l *lock) write(r resourcelock.LeaderElectionRecord) error {
	if l.fail == nil {
		l.holder = r.HolderIdentity
	}
	return l.fail
}

func record(holder string) resourcelock.LeaderElectionRecord {
	return resourcelock.LeaderElectionRecord{HolderIdentity: holder, LeaseDurationSeconds: 15}
}

func TestFenceFollowsRenewals(t *testing.T) {
	ctx := t.Context()
	start := time.Date(2027, 5, 1, 8, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(start)
	l := &lock{}
	f := New(l, clk)
	if err := f.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("before the Lease is acquired: Check() = %v, want ErrLeaseLost", err)
	}
	if err := f.Create(ctx, record("me")); err != nil {
		t.Fatal(err)
	}
	// Writes are allowed until the lease duration, less the transit
	// margin, after the renewal was sent, however late it returned.
	end := start.Add(15*time.Second - transitMargin(15*time.Second))
	clk.SetTime(end.Add(-time.Millisecond))
	if err := f.Check(); err != nil {
		t.Fatalf("just before the end: Check() = %v", err)
	}
	clk.SetTime(end)
	if err := f.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("at the end: Check() = %v, want ErrLeaseLost", err)
	}
	// A failed renewal extends nothing; a later one does.
	l.fail = errors.New("timeout")
	if err := f.Update(ctx, record("me")); err == nil {
		t.Fatal("the failed Update returned no error")
	}
	if err := f.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("after a failed renewal: Check() = %v, want ErrLeaseLost", err)
	}
	l.fail = nil
	if err := f.Update(ctx, record("me")); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(); err != nil {
		t.Fatalf("after a renewal: Check() = %v", err)
	}
	// Releasing the Lease, read as this replica's, closes the fence at once.
	if _, _, err := f.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Update(ctx, record("")); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("after release: Check() = %v, want ErrLeaseLost", err)
	}
}

// A leader that lost its Lease unawares, and is stopped, releases nothing:
// the Lease stays with the replica that took it over. client-go's elector
// releases when the holder it last observed is itself, after reading the
// Lease anew, so the release must check what it read.
func TestReleaseLeavesAnotherReplicasLease(t *testing.T) {
	ctx := t.Context()
	clk := clocktesting.NewFakePassiveClock(time.Date(2027, 5, 1, 8, 0, 0, 0, time.UTC))
	l := &lock{}
	f := New(l, clk)
	if err := f.Update(ctx, record("me")); err != nil {
		t.Fatal(err)
	}
	l.holder = "other" // taken over while this replica was paused
	if _, _, err := f.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Update(ctx, record("")); err != nil {
		t.Fatal(err)
	}
	if l.holder != "other" {
		t.Fatalf("after a stale replica's release the Lease is held by %q, want other", l.holder)
	}
	if err := f.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("after the release: Check() = %v, want ErrLeaseLost", err)
	}
}

func TestClientWritesOnlyBehindTheFence(t *testing.T) {
	ctx := t.Context()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	f := New(&lock{}, clk)
	c := f.Client(fake.NewClientBuilder().WithStatusSubresource(&corev1.Pod{}).Build())
	pod := func() *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	}
	writes := map[string]func() error{
		"create": func() error { return c.Create(ctx, pod()) },
		"update": func() error { return c.Update(ctx, pod()) },
		"patch":  func() error { return c.Patch(ctx, pod(), client.Merge) },
		"delete": func() error { return c.Delete(ctx, pod()) },
		"deleteAllOf": func() error {
			return c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace("ns"))
		},
		"status update": func() error { return c.Status().Update(ctx, pod()) },
		"status patch":  func() error { return c.Status().Patch(ctx, pod(), client.Merge) },
	}
	for name, write := range writes {
		if err := write(); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("%s without the Lease: %v, want ErrLeaseLost", name, err)
		}
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod()), pod()); err == nil || errors.Is(err, ErrLeaseLost) {
		t.Errorf("a read is fenced, or the refused create went through: Get = %v", err)
	}
	if err := f.Update(ctx, record("me")); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, pod()); err != nil {
		t.Errorf("create with the Lease: %v", err)
	}
	if err := c.Status().Update(ctx, pod()); err != nil {
		t.Errorf("status update with the Lease: %v", err)
	}
}

// A short lease, renewed often, leaves the leader most of it to write in
// after each renewal; a long one keeps a margin of 2s.
func TestTransitMarginFitsTheLease(t *testing.T) {
	for lease, want := range map[time.Duration]time.Duration{
		time.Second:      250 * time.Millisecond,
		3 * time.Second:  750 * time.Millisecond,
		8 * time.Second:  2 * time.Second,
		15 * time.Second: 2 * time.Second,
	} {
		if got := transitMargin(lease); got != want {
			t.Errorf("transitMargin(%s) = %s, want %s", lease, got, want)
		}
	}
}
