package controllers

import (
	"context"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

// startOwnWrites runs a manager's cache against the test API server and
// returns its client made to read its own writes. The cache starts no
// informer on a read: one only follows Formations.
func startOwnWrites(t *testing.T) ownWritesClient {
	t.Helper()
	mgr := newManager(t, cache.Options{ReaderFailOnMissingInformer: true})
	ctx, cancel := context.WithCancel(context.Background())
	writes := newOwnWrites()
	if err := writes.follow(ctx, mgr.GetCache(), &cellosv1.Formation{}); err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, ctx, cancel, mgr)
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("the cache did not sync")
	}
	return ownWritesClient{Client: mgr.GetClient(), writes: writes}
}

// A reconcile that reads an object right after this replica wrote it reads
// a cache that has not seen the write yet. Writing on what the cache shows
// would be refused as a conflict; the client reads its own writes, so none
// is. Each round reads and writes back to back, well inside the watch's
// delay, and again with the object not yet in the cache after its create.
func TestOwnWritesAreReadBeforeTheCacheShowsThem(t *testing.T) {
	ctx, ns := context.Background(), newNamespace(t)
	c := startOwnWrites(t)
	for round := range 5 {
		f := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "own-"}}
		if err := c.Create(ctx, f); err != nil {
			t.Fatal(err)
		}
		key := client.ObjectKeyFromObject(f)
		for i := range 20 {
			var got cellosv1.Formation
			if err := c.Get(ctx, key, &got); err != nil {
				t.Fatalf("round %d, write %d: reading the Formation: %v", round, i, err)
			}
			if got.Status.LastAppliedSequence != int64(i) {
				t.Fatalf("round %d, write %d: read lastAppliedSequence %d, want %d: not the last write", round, i, got.Status.LastAppliedSequence, i)
			}
			got.Status.LastAppliedSequence = int64(i + 1)
			if err := c.Status().Update(ctx, &got); err != nil {
				t.Fatalf("round %d, write %d: %v", round, i, err)
			}
		}
	}
	eventually(t, "every write is forgotten once the cache shows it", func() error {
		if n := c.writes.len(); n != 0 {
			return fmt.Errorf("%d writes still remembered", n)
		}
		return nil
	})
}

// Anyone else's write wins: a write on this replica's last version after
// another writer's is refused, and once the cache shows the other write, it
// is what is read.
func TestOwnWritesYieldToOtherWriters(t *testing.T) {
	ctx, ns := context.Background(), newNamespace(t)
	c := startOwnWrites(t)
	f := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared"}}
	if err := c.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Status.LastAppliedSequence = 1
	if err := c.Status().Update(ctx, f); err != nil {
		t.Fatal(err)
	}
	other := f.DeepCopy()
	other.Status.LastAppliedSequence = 7
	if err := controlPlane.Client.Status().Update(ctx, other); err != nil {
		t.Fatal(err)
	}
	var got cellosv1.Formation
	if err := c.Get(ctx, client.ObjectKeyFromObject(f), &got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != other.ResourceVersion {
		got.Status.LastAppliedSequence = 2
		if err := c.Status().Update(ctx, &got); !apierrors.IsConflict(err) {
			t.Fatalf("a write on this replica's last version over another's: %v, want a conflict", err)
		}
	}
	eventually(t, "the other writer's version is read", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(f), &got); err != nil {
			return err
		}
		if got.Status.LastAppliedSequence != 7 {
			return fmt.Errorf("read lastAppliedSequence %d, want the other writer's 7", got.Status.LastAppliedSequence)
		}
		if n := c.writes.len(); n != 0 {
			return fmt.Errorf("%d writes still remembered after the cache showed them all", n)
		}
		return nil
	})
}

// A write of a kind no informer follows is not remembered: nothing would
// ever forget it, and reading it back from the cache would start an
// informer for it.
func TestOwnWritesRememberOnlyFollowedKinds(t *testing.T) {
	ctx, ns := context.Background(), newNamespace(t)
	c := startOwnWrites(t)
	cell := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unfollowed"}}
	if err := c.Create(ctx, cell); err != nil {
		t.Fatal(err)
	}
	if n := c.writes.len(); n != 0 {
		t.Fatalf("%d writes remembered of a kind no informer follows", n)
	}
}
