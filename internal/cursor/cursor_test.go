package cursor

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"cellos.dev/cellos-operator/internal/localenv"
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

	if _, found, err := cm.Load(ctx); err != nil || found {
		t.Fatalf("Load on no ConfigMap: found %v, err %v", found, err)
	}
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
	got, found, err := cm.Load(ctx)
	if err != nil || !found || got.Sequence != 27 || got.Stream != "CELLOS_EVENTS" || !got.StreamCreated.Equal(created) {
		t.Fatalf("after racing commits: %+v found %v err %v; want sequence 27 of CELLOS_EVENTS created %s", got, found, err, created)
	}
}

func TestLoadRefusesAGarbledCursor(t *testing.T) {
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
	if _, _, err := cm.Load(ctx); err == nil {
		t.Fatal("a sequence that is not a number loaded without error")
	}
}
