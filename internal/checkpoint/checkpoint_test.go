package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"testing"
	"time"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/store"
)

var (
	t0     = time.Date(2026, 11, 12, 0, 0, 0, 0, time.UTC)
	stream = store.Stream{Name: "CELLOS_EVENTS", Created: t0.Add(-time.Hour)}
	ttls   = fold.TTLs{Cell: 2 * time.Minute, Formation: 5 * time.Minute}
)

func settings(ttls fold.TTLs) store.Settings {
	return store.Settings{OperatorPrefix: fold.DefaultOperatorPrefix, MaxEventBytes: fold.DefaultMaxEventBytes, TTLs: ttls}
}

// events is a simulated stream of formations, each with cells, whose
// formations end; times are whole seconds from t0.
func events(formations, cells int) []simulator.Event {
	return simulator.Generate(simulator.Config{Seed: 7, Formations: formations, CellsPerFormation: cells, FailureRate: 0.3, DegradedRate: 0.2, Start: t0})
}

// at is the JetStream time of sequence seq in these tests: a second apart,
// so that the TTLs above release objects while the stream goes on.
func at(seq uint64) time.Time { return t0.Add(time.Duration(seq) * time.Second) }

// foldFrom applies evs, numbered from sequence first, to st.
func foldFrom(st *fold.State, first uint64, evs []simulator.Event) {
	for i, ev := range evs {
		seq := first + uint64(i)
		st.Apply(seq, at(seq), ev.Subject, nil, ev.Payload)
	}
}

func newState(ttls fold.TTLs) *fold.State {
	st := fold.NewState()
	st.TTLs = ttls
	return st
}

func snapshotOf(st *fold.State, seq uint64) store.Snapshot {
	named := map[string][]string{}
	for id := range st.Cells {
		named[store.ObjectName(id)] = append(named[store.ObjectName(id)], id)
	}
	return store.Snapshot{Stream: stream, Sequence: seq, Settings: settings(st.TTLs), State: st, CellsNamed: named}
}

func encode(t *testing.T, snap store.Snapshot) []byte {
	t.Helper()
	data, err := Encode(snap)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func want(snap store.Snapshot) Want {
	return Want{Stream: snap.Stream, LastSequence: snap.Sequence, Settings: snap.Settings}
}

// A checkpoint decodes to the state encoded, field for field, and equal
// states encode to equal bytes.
func TestRoundTrip(t *testing.T) {
	evs := events(40, 3)
	st := newState(fold.TTLs{})
	foldFrom(st, 1, evs)
	snap := snapshotOf(st, uint64(len(evs)))
	data := encode(t, snap)
	if again := encode(t, snap); !bytes.Equal(data, again) {
		t.Fatal("the same state encodes to different bytes")
	}
	got, err := Decode(data, want(snap))
	if err != nil {
		t.Fatal(err)
	}
	if got.Stream != snap.Stream || got.Sequence != snap.Sequence || got.Settings != snap.Settings {
		t.Errorf("header: got %+v %d %+v", got.Stream, got.Sequence, got.Settings)
	}
	if !reflect.DeepEqual(got.State.Formations, st.Formations) || !reflect.DeepEqual(got.State.Cells, st.Cells) ||
		!reflect.DeepEqual(got.State.Tallies, st.Tallies) || got.State.LastSequence != st.LastSequence {
		t.Error("the decoded fold differs from the one encoded")
	}
	if !maps.EqualFunc(got.CellsNamed, snap.CellsNamed, func(a, b []string) bool { return reflect.DeepEqual(a, b) }) {
		t.Error("the decoded cell names differ from the ones encoded")
	}
	if len(st.Formations) == 0 || len(st.Cells) == 0 {
		t.Fatal("the stream folded to nothing")
	}
}

// A checkpoint of more objects than the CBOR library decodes by default
// decodes.
func TestManyObjects(t *testing.T) {
	const n = 140_000
	named := make(map[string][]string, n)
	for i := range n {
		id := fmt.Sprint(i)
		named[id] = []string{id}
	}
	snap := store.Snapshot{Stream: stream, Sequence: n, Settings: settings(fold.TTLs{}), State: newState(fold.TTLs{}), CellsNamed: named}
	got, err := Decode(encode(t, snap), want(snap))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.CellsNamed) != n {
		t.Errorf("decoded %d cell names, encoded %d", len(got.CellsNamed), n)
	}
}

// A fold restored from a checkpoint, with its expiries rebuilt, and fed
// the rest of the stream ends where the fold of the whole stream does:
// objects released before the checkpoint stay released, and those due
// after it are released on time.
func TestRestoredFoldEqualsFullFold(t *testing.T) {
	evs := events(60, 3)
	full := newState(ttls)
	foldFrom(full, 1, evs)

	for _, cut := range []int{1, len(evs) / 3, len(evs) / 2, len(evs) - 1} {
		st := newState(ttls)
		foldFrom(st, 1, evs[:cut])
		got, err := Decode(encode(t, snapshotOf(st, uint64(cut))), Want{Stream: stream, LastSequence: uint64(len(evs)), Settings: settings(ttls)})
		if err != nil {
			t.Fatal(err)
		}
		got.State.Reindex()
		foldFrom(got.State, uint64(cut+1), evs[cut:])
		if a, b := encode(t, snapshotOf(got.State, uint64(len(evs)))), encode(t, snapshotOf(full, uint64(len(evs)))); !bytes.Equal(a, b) {
			t.Errorf("cut after %d of %d events: the restored fold ends with %d formations and %d cells, the full fold with %d and %d",
				cut, len(evs), len(got.State.Formations), len(got.State.Cells), len(full.Formations), len(full.Cells))
		}
	}
	if len(full.Formations) == 60 {
		t.Fatal("nothing expired: the test proves nothing of expiry")
	}
}

// rewriteHeader decodes data's header, changes it, and encodes data again
// around the same body.
func rewriteHeader(t *testing.T, data []byte, change func(*header)) []byte {
	t.Helper()
	rest := data[len(magic)+1:]
	n, size := binary.Uvarint(rest)
	var h header
	if err := decMode.Unmarshal(rest[size:size+int(n)], &h); err != nil {
		t.Fatal(err)
	}
	change(&h)
	hb, err := encMode.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(magic), version)
	out = binary.AppendUvarint(out, uint64(len(hb)))
	out = append(out, hb...)
	return append(out, rest[size+int(n):]...)
}

// Every checkpoint that cannot give what a full fold gives is refused, and
// says why.
func TestDecodeRefuses(t *testing.T) {
	evs := events(5, 2)
	st := newState(ttls)
	foldFrom(st, 1, evs)
	snap := snapshotOf(st, uint64(len(evs)))
	data := encode(t, snap)
	flip := func(i int) []byte {
		d := bytes.Clone(data)
		d[i] ^= 0xff
		return d
	}
	other := func(change func(*Want)) Want {
		w := want(snap)
		change(&w)
		return w
	}
	for _, c := range []struct {
		name string
		data []byte
		want Want
		is   Reason
	}{
		{"empty", nil, want(snap), Corrupt},
		{"not a checkpoint", []byte("hello"), want(snap), Corrupt},
		{"bad magic", flip(0), want(snap), Corrupt},
		{"another format version", flip(len(magic)), want(snap), Format},
		{"truncated header", data[:len(magic)+3], want(snap), Corrupt},
		{"damaged header", flip(len(magic) + 4), want(snap), Corrupt},
		{"damaged body", flip(len(data) - 2), want(snap), Corrupt},
		{"truncated body", data[:len(data)-1], want(snap), Corrupt},
		{"another shape of the fold", rewriteHeader(t, data, func(h *header) { h.TypeHash = make([]byte, 32) }), want(snap), Format},
		{"body hash of another body", rewriteHeader(t, data, func(h *header) { h.BodySHA256[0] ^= 1 }), want(snap), Corrupt},
		{"another stream", data, other(func(w *Want) { w.Stream.Name = "OTHER" }), OtherStream},
		{"the stream recreated", data, other(func(w *Want) { w.Stream.Created = w.Stream.Created.Add(time.Second) }), OtherStream},
		{"ahead of the stream", data, other(func(w *Want) { w.LastSequence-- }), Ahead},
		{"another cell TTL", data, other(func(w *Want) { w.Settings.TTLs.Cell++ }), OtherSettings},
		{"another formation TTL", data, other(func(w *Want) { w.Settings.TTLs.Formation = 0 }), OtherSettings},
		{"another operator prefix", data, other(func(w *Want) { w.Settings.OperatorPrefix = "ops.cellos" }), OtherSettings},
		{"another largest event", data, other(func(w *Want) { w.Settings.MaxEventBytes = 4096 }), OtherSettings},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.data, c.want)
			var f *Fallback
			if !errors.As(err, &f) {
				t.Fatalf("got %v, want a fallback (%s)", err, c.is)
			}
			if f.Reason != c.is {
				t.Errorf("got %s (%v), want %s", f.Reason, f.Err, c.is)
			}
		})
	}
	// The stream's end is no further than the checkpoint's: it is used.
	if _, err := Decode(data, want(snap)); err != nil {
		t.Errorf("a checkpoint at the stream's last sequence: %v", err)
	}
}

// The type hash follows what CBOR encodes of a type, and only that.
func TestTypeHash(t *testing.T) {
	type a struct {
		N  int
		M  map[string]*[]time.Time
		un int //nolint:unused // unexported: not encoded, so not hashed
	}
	type b struct {
		N int
		M map[string]*[]time.Time
	}
	type renamed struct {
		Count int
		M     map[string]*[]time.Time
	}
	type retyped struct {
		N int64
		M map[string]*[]time.Time
	}
	type grown struct {
		N int
		M map[string]*[]time.Time
		X string
	}
	type tree struct{ Children []*tree }
	base := typeHash(reflect.TypeFor[a]())
	if !bytes.Equal(base, typeHash(reflect.TypeFor[a]())) {
		t.Fatal("the hash of one type varies")
	}
	for name, other := range map[string]reflect.Type{
		"renamed type":  reflect.TypeFor[b](),
		"renamed field": reflect.TypeFor[renamed](),
		"retyped field": reflect.TypeFor[retyped](),
		"added field":   reflect.TypeFor[grown](),
	} {
		if bytes.Equal(base, typeHash(other)) {
			t.Errorf("%s: same hash", name)
		}
	}
	typeHash(reflect.TypeFor[tree]()) // a recursive type ends
}

// BenchmarkCheckpoint encodes and decodes the fold of 10,000 objects (1,000
// formations of 9 cells), and reports the checkpoint's size.
func BenchmarkCheckpoint(b *testing.B) {
	st := newState(fold.TTLs{})
	evs := events(1000, 9)
	foldFrom(st, 1, evs)
	snap := snapshotOf(st, uint64(len(evs)))
	if n := len(st.Formations) + len(st.Cells); n != 10_000 {
		b.Fatalf("%d objects, want 10000", n)
	}
	data, err := Encode(snap)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := Encode(snap); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(data)), "bytes")
		b.ReportMetric(float64(len(data))/10_000, "bytes/object")
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			got, err := Decode(data, want(snap))
			if err != nil {
				b.Fatal(err)
			}
			got.State.Reindex()
		}
		b.ReportMetric(float64(len(data)), "bytes")
	})
}
