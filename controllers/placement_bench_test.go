package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"cellos.dev/cellos-operator/internal/store"
)

// Placing a cell reads the cache for the Cells that may hold it, on every
// event of the cell (CellReconciler.lagging). BenchmarkPlaceCell places each
// cell of a formation of n written Cells in turn, as every event after a
// cell's first does, and reports what one placement allocates: what it costs
// should not grow with the size of the cell's formation.
func BenchmarkPlaceCell(b *testing.B) {
	for _, n := range []int{25, 500} {
		b.Run(fmt.Sprintf("cells=%d", n), func(b *testing.B) {
			ctx := context.Background()
			ns := newNamespace(b)
			formationID := fmt.Sprintf("bench-%d", n)
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("%s-cell-%d", formationID, i)
				writeCell(b, ns, ids[i], formationID)
			}
			p := cachedPlacer(b, ns)
			want := func(id string) client.ObjectKey {
				return client.ObjectKey{Namespace: ns, Name: store.ObjectName(id)}
			}
			for deadline := time.Now().Add(time.Minute); ; {
				key, err := p.cellKey(ctx, ids[n-1], formationID)
				if err == nil && key == want(ids[n-1]) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("the cache never showed the last Cell: %v %v", key, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				id := ids[i%n]
				key, err := p.cellKey(ctx, id, formationID)
				if err != nil || key != want(id) {
					b.Fatalf("cell %s placed at %v (%v), want %v", id, key, err, want(id))
				}
			}
		})
	}
}
