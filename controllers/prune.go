package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/store"
)

var prunedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cellos_operator_pruned_objects_total",
	Help: "Observed Formations and Cells deleted because only a stream since recreated under the same name had named them, by kind.",
}, []string{"kind"})

func init() {
	metrics.Registry.MustRegister(prunedTotal)
}

// pruner deletes, once each fold of the stream has caught up, the observed
// Formations and the Cells that a stream since recreated under the same name
// projected and the current stream does not name: so that after a recreated
// stream no object is left over. It runs on the leader.
type pruner struct {
	deleter
	Config
}

// +kubebuilder:rbac:groups=cellos.dev,resources=cells,verbs=delete

// NeedLeaderElection makes only the leader prune.
func (p *pruner) NeedLeaderElection() bool { return true }

// resetCheck is how often the pruner looks for the next fold of the stream,
// which starts only when the stream is recreated.
const resetCheck = 5 * time.Second

// Start prunes once after each fold of the stream catches up, until ctx ends.
func (p *pruner) Start(ctx context.Context) error {
	var pruned <-chan struct{}
	for {
		replayed, stream := p.Store.Replayed()
		wait := replayed
		if replayed == pruned {
			wait = nil // this fold is done with; look again later
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(resetCheck):
			continue
		case <-wait:
		}
		if err := p.prune(ctx, stream); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Pruning the objects of a recreated stream")
			continue
		}
		pruned = replayed
	}
}

// prune deletes the objects stamped by another stream that stream does not
// name. An object stamped by this stream (its events may have been purged
// since), or never stamped (written before stamps), is kept, as is a
// declared Formation, which its user owns.
func (p *pruner) prune(ctx context.Context, stream store.Stream) error {
	var formations cellosv1.FormationList
	if err := p.List(ctx, &formations); err != nil {
		return fmt.Errorf("listing Formations: %w", err)
	}
	for i := range formations.Items {
		f := &formations.Items[i]
		_, current, known := p.Store.Formation(f.Status.FormationID)
		if current != stream {
			return nil // the stream was recreated again: prune after that fold
		}
		ref := store.Ref{Kind: store.FormationKind, ID: f.Status.FormationID}
		if f.Spec == nil && !known && store.Foreign(stream, ref, f.Status.LastAppliedSequence, f.Status.StreamStamp) {
			if err := p.removeLeftover(ctx, f, store.FormationKind); err != nil {
				return err
			}
		}
	}
	var cells cellosv1.CellList
	if err := p.List(ctx, &cells); err != nil {
		return fmt.Errorf("listing Cells: %w", err)
	}
	for i := range cells.Items {
		c := &cells.Items[i]
		_, current, known := p.Store.Cell(c.Status.CellID)
		if current != stream {
			return nil
		}
		ref := store.Ref{Kind: store.CellKind, ID: c.Status.CellID}
		if !known && store.Foreign(stream, ref, c.Status.LastAppliedSequence, c.Status.StreamStamp) {
			if err := p.removeLeftover(ctx, c, store.CellKind); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *pruner) removeLeftover(ctx context.Context, obj client.Object, kind store.Kind) error {
	if deleted, err := p.remove(ctx, obj, kind); !deleted {
		return err
	}
	prunedTotal.WithLabelValues(string(kind)).Inc()
	ctrl.LoggerFrom(ctx).Info("Deleted an object only a recreated stream named", "kind", kind, "object", client.ObjectKeyFromObject(obj))
	return nil
}
