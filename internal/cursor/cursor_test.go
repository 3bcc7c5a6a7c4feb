package cursor

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"cellos.dev/cellos-operator/test/localenv"
)

func TestCommitNeverDecreases(t *testing.T) {
	cp := localenv.StartControlPlane(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cursor-"}}
	if err := cp.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	cm := &ConfigMap{Client: cp.Client, Key: types.NamespacedName{Namespace: ns.Name, Name: "cellos-projection-cursor"}}
	created := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

	pos := Position{Sequence: 10, Stream: "CELLOS_EVENTS", StreamCreated: created}
	if _, err := cm.Commit(ctx, pos); err != nil {
		t.Fatal(err)
	}
	pos.Sequence = 5
	stored, err := cm.Commit(ctx, pos)
	if err != nil || stored.Sequence != 10 {
		t.Fatalf("commit of a lower sequence stored %d (err %v), want 10 kept", stored.Sequence, err)
	}

	// Writers racing each other end at the highest sequence any of them wrote.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			p := Position{Sequence: uint64(20 + i), Stream: "CELLOS_EVENTS", StreamCreated: created}
			if _, err := cm.Commit(ctx, p); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got := load(t, cm)
	if got.Sequence != 27 || got.Stream != "CELLOS_EVENTS" || !got.StreamCreated.Equal(created) {
		t.Fatalf("after racing commits: %+v; want sequence 27 of CELLOS_EVENTS created %s", got, created)
	}

	// A gap is recorded without moving the sequence back.
	pos = Position{Sequence: 3, Stream: "CELLOS_EVENTS", StreamCreated: created, LastGap: "12-14"}
	if stored, err := cm.Commit(ctx, pos); err != nil || stored.Sequence != 27 || stored.LastGap != "12-14" {
		t.Fatalf("commit of a gap stored %+v (err %v)", stored, err)
	}
	if got := load(t, cm); got.Sequence != 27 || got.LastGap != "12-14" {
		t.Fatalf("stored %+v", got)
	}
}

// load reads the position stored on cm.
func load(t *testing.T, cm *ConfigMap) Position {
	t.Helper()
	p, found, err := cm.Load(context.Background())
	if err != nil || !found {
		t.Fatalf("Load: found %v, err %v", found, err)
	}
	return p
}

// A cursor that cannot be read is replaced: the projection does not resume
// from it, so nothing is lost.
func TestCommitReplacesAGarbledCursor(t *testing.T) {
	cp := localenv.StartControlPlane(t)
	ctx := context.Background()
	cmObj := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "garbled"},
		Data:       map[string]string{SequenceKey: "twelve"},
	}
	if err := cp.Client.Create(ctx, cmObj); err != nil {
		t.Fatal(err)
	}
	cm := &ConfigMap{Client: cp.Client, Key: types.NamespacedName{Namespace: "default", Name: "garbled"}}
	pos := Position{Sequence: 4, Stream: "CELLOS_EVENTS", StreamCreated: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := cm.Commit(ctx, pos); err != nil {
		t.Fatal(err)
	}
	if got := load(t, cm); got.Sequence != 4 {
		t.Fatalf("stored %+v, want sequence 4", got)
	}
}
