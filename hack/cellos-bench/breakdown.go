package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/localenv"
)

// The breakdown measures what each feature of the operator's objects costs
// the API server: the same Cells written as minimal objects (the
// baseline), then with one feature added at a time, each to a kind of its
// own in benchGroup, then as the operator's Cells with every feature. Each
// feature makes the same writes, a create and a status write for each cell
// of one stream, with the ceiling's concurrency; the figure is the CPU time
// kube-apiserver and etcd used over them, per write. Every feature runs on
// one control plane, once a round, its objects deleted after it so that
// the next finds the store as it was; each round starts at the next
// feature, so that a drift of the machine's load does not fall on the same
// ones.

// breakdownName is the breakdown's name for -only: it runs only when named.
const breakdownName = "breakdown"

// breakdownSettle is how long a feature's measure lasts after its last
// write: the API server decodes each change from etcd's watch after it
// answered the write.
const breakdownSettle = 500 * time.Millisecond

// benchManager is the field manager of the breakdown's writes.
const benchManager = "cellos-bench"

// breakdownWorkload is the stream whose cells the breakdown writes.
func breakdownWorkload(quick bool) simulator.Config {
	cfg := simulator.Config{Seed: 8, Formations: 40, CellsPerFormation: 25, InFlight: 16, FailureRate: 0.2, DegradedRate: 0.2}
	if quick {
		cfg.Formations = 8
	}
	return cfg
}

// feature is one way of writing the breakdown's cells.
type feature struct {
	name string
	// gvk is the kind the objects are written as; schema, when set, is the
	// root schema of its CRD, which the breakdown installs.
	gvk    schema.GroupVersionKind
	schema *apiextensionsv1.JSONSchemaProps
	// meta changes an object before its create; status is its status (the
	// minimal one when nil).
	meta   func(u *unstructured.Unstructured, it *breakdownItem)
	status func(it *breakdownItem) map[string]any
	// apply writes status by server-side apply instead of an update;
	// watched keeps a watch of the kind open during the writes; events
	// writes two Events per cell instead of the object.
	apply, watched, events bool
}

// benchKind is a kind of benchGroup with a minimal schema changed by edit.
func benchKind(kind string, edit func(root *apiextensionsv1.JSONSchemaProps)) (schema.GroupVersionKind, *apiextensionsv1.JSONSchemaProps) {
	root := minimalSchema()
	if edit != nil {
		edit(&root)
	}
	return schema.GroupVersionKind{Group: benchGroup, Version: "v1", Kind: kind}, &root
}

// withStatusField is an edit that adds a status field of schema prop.
func withStatusField(name string, prop apiextensionsv1.JSONSchemaProps) func(*apiextensionsv1.JSONSchemaProps) {
	return func(root *apiextensionsv1.JSONSchemaProps) { root.Properties["status"].Properties[name] = prop }
}

// features are the breakdown's rows, the baseline first, from the root
// schemas of the operator's CRDs, Formation and Cell, as installed.
func features(formationCRD, cellCRD apiextensionsv1.JSONSchemaProps) []feature {
	f := func(name, kind string, edit func(*apiextensionsv1.JSONSchemaProps)) feature {
		gvk, root := benchKind(kind, edit)
		return feature{name: name, gvk: gvk, schema: root}
	}
	statusProp := func(root apiextensionsv1.JSONSchemaProps, name string) apiextensionsv1.JSONSchemaProps {
		return root.Properties["status"].Properties[name]
	}
	label := f("+ the formation-id label", "LabelledCell", nil)
	label.meta = func(u *unstructured.Unstructured, it *breakdownItem) {
		u.SetLabels(map[string]string{cellosv1.FormationIDLabel: it.cell.FormationID})
	}
	owned := f("+ an owner reference", "OwnedCell", nil)
	owned.meta = func(u *unstructured.Unstructured, it *breakdownItem) { u.SetOwnerReferences(it.ownerRefs(false)) }
	blocking := f("+ an owner reference with blockOwnerDeletion", "BlockingCell", nil)
	blocking.meta = func(u *unstructured.Unstructured, it *breakdownItem) { u.SetOwnerReferences(it.ownerRefs(true)) }
	// Both, to tell what they cost from what any metadata a create sets
	// costs: the create's own managedFields entry, which a create that
	// sets no field of metadata does not leave.
	both := f("+ the label and an owner reference", "LabelledOwnedCell", nil)
	both.meta = func(u *unstructured.Unstructured, it *breakdownItem) {
		label.meta(u, it)
		owned.meta(u, it)
	}
	// The Formation's rules need its spec in the schema; the objects, like
	// the Formations the stream makes, have none.
	cel := f("+ the Formation's CEL rules", "ValidatedCell", func(root *apiextensionsv1.JSONSchemaProps) {
		root.Properties["spec"] = formationCRD.Properties["spec"]
		root.XValidations = formationCRD.XValidations
	})
	typed := f("+ the Cell's other status fields, under its schema", "TypedCell", func(root *apiextensionsv1.JSONSchemaProps) { *root = cellCRD })
	typed.status = func(it *breakdownItem) map[string]any {
		st := maps.Clone(it.cellStatus)
		delete(st, "conditions")
		return st
	}
	doc := f("+ the Formation's document", "DocumentedCell", withStatusField("document", statusProp(formationCRD, "document")))
	doc.status = func(it *breakdownItem) map[string]any { return it.plus("document", it.formationStatus["document"]) }
	conds := f("+ the Cell's 3 conditions", "ConditionedCell", withStatusField("conditions", statusProp(cellCRD, "conditions")))
	conds.status = func(it *breakdownItem) map[string]any { return it.plus("conditions", it.cellStatus["conditions"]) }
	bare := f("+ the Cell's 3 conditions, messages empty", "BareConditionedCell", withStatusField("conditions", statusProp(cellCRD, "conditions")))
	bare.status = func(it *breakdownItem) map[string]any { return it.plus("conditions", it.bareConditions) }
	five := f("+ the Formation's 5 conditions", "FiveConditionedCell", withStatusField("conditions", statusProp(formationCRD, "conditions")))
	five.status = func(it *breakdownItem) map[string]any { return it.plus("conditions", it.formationStatus["conditions"]) }
	applied := f("status by server-side apply instead of update", "AppliedCell", nil)
	applied.apply = true
	watched := f("+ one watch of the kind", "WatchedCell", nil)
	watched.watched = true
	operator := feature{name: "the operator's Cell: every feature", gvk: cellosv1.GroupVersion.WithKind("Cell"),
		meta: both.meta, status: func(it *breakdownItem) map[string]any { return maps.Clone(it.cellStatus) }}
	return []feature{
		f("minimal: the baseline", "BaselineCell", nil),
		label, owned, blocking, both, cel, typed, doc, conds, bare, five, applied, watched,
		{name: "an Event per write instead (events.k8s.io/v1)", events: true},
		operator,
	}
}

// breakdownItem is one cell of the stream, with what its objects carry.
type breakdownItem struct {
	cell *fold.Cell
	// owner is the uid of the object that stands for its Formation.
	owner types.UID
	// cellStatus and formationStatus are the statuses the operator's
	// builders make for the cell and its formation, as JSON objects;
	// bareConditions the cell's conditions with empty messages.
	cellStatus, formationStatus map[string]any
	bareConditions              []any
}

// minimalStatus is the cell's status as a minimal object.
func (it *breakdownItem) minimalStatus() map[string]any {
	return minimalStatus(it.cell.ID, "state", string(it.cell.State), it.cell.LastAppliedSequence)
}

// plus is the minimal status with one more field.
func (it *breakdownItem) plus(field string, v any) map[string]any {
	st := it.minimalStatus()
	st[field] = v
	return st
}

// ownerRefs is the owner reference the operator gives a Cell, with
// blockOwnerDeletion when block is set.
func (it *breakdownItem) ownerRefs(block bool) []metav1.OwnerReference {
	ref := metav1.OwnerReference{APIVersion: cellosv1.GroupVersion.String(), Kind: "Formation",
		Name: store.ObjectName(it.cell.FormationID), UID: it.owner}
	if block {
		ref.BlockOwnerDeletion = &block
	}
	return []metav1.OwnerReference{ref}
}

// BreakdownResult is one feature measured once.
type BreakdownResult struct {
	Feature string `json:"feature"`
	Round   int    `json:"round"`
	// Writes is the API server's count of the writes made (leases
	// excluded), Failed those it refused.
	Writes float64 `json:"writes"`
	Failed float64 `json:"failed"`
	// CPUSeconds is kube-apiserver's and etcd's CPU time over the writes and
	// breakdownSettle after them; MsPerWrite the same per write.
	CPUSeconds float64 `json:"cpuSeconds"`
	MsPerWrite float64 `json:"msPerWrite"`
	Seconds    float64 `json:"seconds"`
	OtherCores float64 `json:"otherCores"`
}

// Breakdown is every feature measured, round by round.
type Breakdown struct {
	Cells   int               `json:"cells"`
	Results []BreakdownResult `json:"results"`
	// IdleCores is what the control plane used with nothing to do, before
	// the first round: a share of every figure.
	IdleCores float64 `json:"idleCores"`
}

// breakdownRun is the breakdown's control plane and what it writes.
type breakdownRun struct {
	cl    *cluster
	dyn   dynamic.Interface
	items []*breakdownItem
}

// runBreakdown measures every feature rounds times, on one control plane.
func (b *bench) runBreakdown(ctx context.Context, cfg simulator.Config, rounds int) (*Breakdown, error) {
	formationCRD, cellCRD, err := operatorSchemas()
	if err != nil {
		return nil, err
	}
	feats := features(formationCRD, cellCRD)
	cl, err := newCluster(ctx)
	if err != nil {
		return nil, err
	}
	defer cl.stop()
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, f := range feats {
		if f.schema != nil {
			crds = append(crds, benchCRD(f.gvk.Kind, *f.schema))
		}
	}
	ownerGVK, ownerSchema := benchKind("Owner", nil)
	if err := cl.installCRDs(append(crds, benchCRD(ownerGVK.Kind, *ownerSchema))); err != nil {
		return nil, err
	}
	r := &breakdownRun{cl: cl}
	if r.dyn, err = dynamic.NewForConfig(cl.cfg); err != nil {
		return nil, err
	}
	if err := r.prepare(ctx, cfg, ownerGVK); err != nil {
		return nil, err
	}
	// The control plane settles after its start and the CRDs' installation.
	time.Sleep(5 * time.Second)
	idle := startCPUMeter(cl.ourPIDs())
	time.Sleep(5 * time.Second)
	use := idle.read()
	bd := &Breakdown{Cells: len(r.items), IdleCores: use.cores["kube-apiserver"] + use.cores["etcd"]}
	// A kind's first writes cost more than the next (the API server builds
	// what it needs for the kind lazily): a few of each, unmeasured, first.
	for _, f := range feats {
		if err := r.writeAll(ctx, f, r.items[:ceilingWorkers]); err != nil {
			return bd, fmt.Errorf("%s: %w", f.name, err)
		}
		if err := r.deleteAll(ctx, f); err != nil {
			return bd, err
		}
	}
	for round := range rounds {
		for i := range feats {
			f := feats[(round+i)%len(feats)]
			if ctx.Err() != nil {
				return bd, ctx.Err()
			}
			res, err := r.measure(ctx, f)
			res.Round = round + 1
			if err != nil {
				return bd, fmt.Errorf("%s: %w", f.name, err)
			}
			log.Printf("breakdown, round %d: %-50s %5.0f writes %6.3f ms API server CPU per write", res.Round, f.name, res.Writes, res.MsPerWrite)
			bd.Results = append(bd.Results, res)
		}
	}
	return bd, nil
}

// operatorSchemas are the root schemas of the operator's CRDs, Formation
// and Cell, from config/crd/bases.
func operatorSchemas() (formation, cell apiextensionsv1.JSONSchemaProps, err error) {
	opts := envtest.CRDInstallOptions{Paths: []string{filepath.Join(localenv.RepoRoot(), "config", "crd", "bases")}, ErrorIfPathMissing: true}
	if err := envtest.ReadCRDFiles(&opts); err != nil {
		return formation, cell, err
	}
	for _, crd := range opts.CRDs {
		switch root := *crd.Spec.Versions[0].Schema.OpenAPIV3Schema; crd.Spec.Names.Kind {
		case "Formation":
			formation = root
		case "Cell":
			cell = root
		}
	}
	return formation, cell, nil
}

// prepare folds the stream and makes each cell's item, with an object of
// kind owner for each formation to own its cells.
func (r *breakdownRun) prepare(ctx context.Context, cfg simulator.Config, owner schema.GroupVersionKind) error {
	o := newProjection(simulator.Generate(cfg))
	o.setStream(store.Stream{Name: jetstream.DefaultStreamName, Created: time.Now()})
	owners := map[string]types.UID{}
	formationStatuses := map[string]map[string]any{}
	now := time.Now()
	for id, f := range o.final.Formations {
		u := newMinimal(owner.Kind, r.cl.ns, store.ObjectName(id))
		if err := r.cl.c.Create(ctx, u); err != nil {
			return fmt.Errorf("creating an owner: %w", err)
		}
		owners[id] = u.GetUID()
		st := status.FormationStatus(f, o.stamps[store.Ref{Kind: store.FormationKind, ID: id}], o.final.Counts(id), 1, nil, now)
		var err error
		if formationStatuses[id], err = runtime.DefaultUnstructuredConverter.ToUnstructured(&st); err != nil {
			return err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(o.final.Cells)) {
		c := o.final.Cells[id]
		st := status.CellStatus(c, o.stamps[store.Ref{Kind: store.CellKind, ID: id}], 1, nil, now)
		cellStatus, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
		if err != nil {
			return err
		}
		var bare []any
		for _, cond := range st.Conditions {
			cond.Message = ""
			u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cond)
			if err != nil {
				return err
			}
			bare = append(bare, u)
		}
		r.items = append(r.items, &breakdownItem{cell: c, owner: owners[c.FormationID],
			cellStatus: cellStatus, formationStatus: formationStatuses[c.FormationID], bareConditions: bare})
	}
	return nil
}

// measure writes every item with feature f, and measures the control plane's CPU from the first write until
// breakdownSettle after the last; it then deletes what it wrote.
func (r *breakdownRun) measure(ctx context.Context, f feature) (BreakdownResult, error) {
	res := BreakdownResult{Feature: f.name}
	if f.watched {
		w, err := r.dyn.Resource(benchResource(f.gvk.Kind)).Namespace(r.cl.ns).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			return res, err
		}
		defer w.Stop()
		go func() {
			for range w.ResultChan() {
			}
		}()
	}
	before, err := r.cl.requests(ctx)
	if err != nil {
		return res, err
	}
	meter := startCPUMeter(r.cl.ourPIDs())
	start := time.Now()
	werr := r.writeAll(ctx, f, r.items)
	res.Seconds = time.Since(start).Seconds()
	time.Sleep(breakdownSettle)
	use := meter.read()
	after, err := r.cl.requests(ctx)
	if err != nil {
		return res, err
	}
	w := diffWrites(before, after)
	res.Writes, res.Failed, res.OtherCores = w.Total, w.Failed, use.others
	res.CPUSeconds = use.controlPlaneCPU()
	if res.Writes > 0 {
		res.MsPerWrite = 1000 * res.CPUSeconds / res.Writes
	}
	if werr != nil {
		return res, werr
	}
	return res, r.deleteAll(ctx, f)
}

// writeAll writes items with feature f, 16 at a time as the ceiling writes.
func (r *breakdownRun) writeAll(ctx context.Context, f feature, items []*breakdownItem) error {
	var failed atomic.Int64
	queue := make(chan *breakdownItem)
	var wg sync.WaitGroup
	for range ceilingWorkers {
		wg.Go(func() {
			for it := range queue {
				if err := r.write(ctx, f, it); err != nil {
					failed.Add(1)
					log.Printf("breakdown, %s: %v", f.name, err)
				}
			}
		})
	}
	for _, it := range items {
		queue <- it
	}
	close(queue)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d cells not written", n)
	}
	return nil
}

// write makes the feature's two writes for one cell.
func (r *breakdownRun) write(ctx context.Context, f feature, it *breakdownItem) error {
	c := r.cl.c
	name := store.ObjectName(it.cell.ID)
	if f.events {
		for i := range 2 {
			ev := phaseEvent(r.cl.ns, fmt.Sprintf("%s.%d", name, i), it)
			if err := retry(ctx, "creating an Event", func() error { return c.Create(ctx, ev) }); err != nil {
				return err
			}
		}
		return nil
	}
	u := r.object(f.gvk, name)
	if f.meta != nil {
		f.meta(u, it)
	}
	if err := retry(ctx, "creating", func() error { return c.Create(ctx, u) }); err != nil {
		return err
	}
	st := it.minimalStatus()
	if f.status != nil {
		st = f.status(it)
	}
	if f.apply {
		// An apply configuration holds only what the writer means to own.
		ac := r.object(f.gvk, name)
		ac.Object["status"] = st
		return retry(ctx, "applying status", func() error {
			return c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(ac), client.FieldOwner(benchManager), client.ForceOwnership)
		})
	}
	u.Object["status"] = st
	return retry(ctx, "writing status", func() error { return c.Status().Update(ctx, u) })
}

// object is an empty object of kind gvk in the breakdown's namespace.
func (r *breakdownRun) object(gvk schema.GroupVersionKind, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(r.cl.ns)
	u.SetName(name)
	return u
}

// phaseEvent is the Event the operator raises when a Formation's phase
// changes, as its recorder (k8s.io/client-go/tools/events) posts it.
func phaseEvent(ns, name string, it *breakdownItem) *eventsv1.Event {
	return &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Namespace: ns, Name: name},
		EventTime:           metav1.NewMicroTime(time.Now()),
		ReportingController: "cellos-operator",
		ReportingInstance:   benchManager,
		Action:              "Project",
		Reason:              cellosv1.RunningReason,
		Note:                fmt.Sprintf("Phase Running at stream sequence %d", it.cell.LastAppliedSequence),
		Type:                corev1.EventTypeNormal,
		Regarding: corev1.ObjectReference{APIVersion: cellosv1.GroupVersion.String(), Kind: "Formation",
			Namespace: ns, Name: store.ObjectName(it.cell.FormationID), UID: it.owner},
	}
}

// deleteAll deletes what feature f wrote, and lets the API server settle
// from it before the next feature's measure.
func (r *breakdownRun) deleteAll(ctx context.Context, f feature) error {
	var obj client.Object = &eventsv1.Event{}
	if !f.events {
		obj = r.object(f.gvk, "")
	}
	if err := r.cl.c.DeleteAllOf(ctx, obj, client.InNamespace(r.cl.ns)); err != nil {
		return err
	}
	time.Sleep(breakdownSettle)
	return nil
}

// printBreakdown writes the breakdown's table: for each feature, the
// least, median and most of its CPU per write over the rounds, and the
// median over the rounds of its ratio to the baseline of the same round.
func printBreakdown(out io.Writer, bd *Breakdown) {
	if bd == nil || len(bd.Results) == 0 {
		return
	}
	rounds := 0
	baseline := map[int]float64{}
	var names []string
	byFeature := map[string][]BreakdownResult{}
	for _, r := range bd.Results {
		rounds = max(rounds, r.Round)
		if len(byFeature[r.Feature]) == 0 {
			names = append(names, r.Feature)
		}
		byFeature[r.Feature] = append(byFeature[r.Feature], r)
	}
	baseName := names[0]
	for _, r := range byFeature[baseName] {
		baseline[r.Round] = r.MsPerWrite
	}
	fmt.Fprintf(out, "\nCost breakdown: %d cells, each a create and a status write, %d in flight; kube-apiserver and etcd CPU per write over %d rounds (control plane idle: %.3f cores)\n\n",
		bd.Cells, ceilingWorkers, rounds, bd.IdleCores)
	fmt.Fprintln(out, "| feature | writes | CPU ms per write (least / median / most) | × the baseline (median over rounds) | other load (cores, median) |")
	fmt.Fprintln(out, "|---|--:|--:|--:|--:|")
	for _, name := range names {
		rs := byFeature[name]
		var ratios, others []float64
		for _, r := range rs {
			if b := baseline[r.Round]; b > 0 {
				ratios = append(ratios, r.MsPerWrite/b)
			}
			others = append(others, r.OtherCores)
		}
		lo, med, hi := spreadOf(mapped(rs, func(r BreakdownResult) float64 { return r.MsPerWrite }))
		_, ratio, _ := spreadOf(ratios)
		_, other, _ := spreadOf(others)
		fmt.Fprintf(out, "| %s | %.0f | %.2f / %.2f / %.2f | %.2f× | %.1f |\n", name, rs[0].Writes, lo, med, hi, ratio, other)
	}
}
