// Package checkpoint encodes the fold's state with what it is a fold of
// (the stream's identity, the sequence it covers, the settings that change
// its result), and keeps it in a JetStream Object Store bucket, so that a
// start folds only the events after it instead of the whole stream.
//
// A checkpoint is only ever a shortcut: Decode refuses one that cannot give
// the same result as a full fold (damaged, written by a binary whose state
// has another shape, of another stream, ahead of the stream, or folded with
// other settings), and says why, so the caller folds from the stream's first
// event instead.
package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"reflect"
	"time"

	"github.com/fxamacker/cbor/v2"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
)

// Reason says why a checkpoint was not used; it labels the fallbacks metric.
type Reason string

// The reasons to fold the stream from its first event rather than from a
// checkpoint.
const (
	// Missing: no checkpoint of this stream was ever written (first start,
	// or checkpoints newly enabled), or it was deleted.
	Missing Reason = "missing"
	// Unreadable: the bucket could not be read (NATS away, a permission
	// missing, a bucket that --create-stream=false expects but nobody made).
	Unreadable Reason = "unreadable"
	// Corrupt: the bytes are damaged (magic, header, body hash, body).
	Corrupt Reason = "corrupt"
	// Format: written by a binary with another format version, or whose
	// fold state has another shape, as after an upgrade.
	Format Reason = "format"
	// OtherStream: of another stream, or of an earlier stream of the same
	// name since deleted and recreated.
	OtherStream Reason = "other_stream"
	// Ahead: it covers sequences the stream does not have, as when the
	// stream was restored from a backup.
	Ahead Reason = "ahead"
	// OtherSettings: folded with other TTLs, operator subject prefix or
	// largest event, which would have given another state.
	OtherSettings Reason = "settings"
)

// Reasons lists every Reason, to initialize the metric's series.
var Reasons = []Reason{Missing, Unreadable, Corrupt, Format, OtherStream, Ahead, OtherSettings}

// Fallback is why a checkpoint cannot stand in for a full fold.
type Fallback struct {
	Reason Reason
	Err    error
}

func (f *Fallback) Error() string {
	return fmt.Sprintf("checkpoint not used (%s): %v", f.Reason, f.Err)
}
func (f *Fallback) Unwrap() error { return f.Err }

func fallback(reason Reason, format string, args ...any) *Fallback {
	return &Fallback{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// magic opens every checkpoint, so that anything else in the bucket is
// recognized as such; version is the layout that follows it.
const (
	magic   = "CELLOSCP"
	version = 1
)

// header is what Decode checks before it trusts the body.
type header struct {
	// TypeHash is typeHash of body: a binary whose fold state has another
	// shape must not decode it into its own.
	TypeHash []byte
	Stream   string
	// StreamCreated tells an earlier stream of the same name from the
	// current one.
	StreamCreated time.Time
	// Sequence is the highest sequence folded into the body.
	Sequence   uint64
	Settings   store.Settings
	BodySHA256 []byte
}

// body is what the store keeps of the fold, whole: State is encoded with
// every exported field, so that a field added to it changes typeHash.
type body struct {
	State      *fold.State
	CellsNamed map[string][]string
}

var (
	// Sorted map keys make equal states encode to equal bytes; RFC 3339
	// times keep the nanoseconds and the offset the fold holds.
	encMode = must(cbor.EncOptions{Sort: cbor.SortCoreDeterministic, Time: cbor.TimeRFC3339Nano, IndefLength: cbor.IndefLengthForbidden}.EncMode())
	// The fold holds as many objects as are live: no bound below the
	// largest the library allows (its defaults refuse maps over 131,072).
	decMode = must(cbor.DecOptions{MaxMapPairs: math.MaxInt32, MaxArrayElements: math.MaxInt32}.DecMode())
	// bodyType is the hash of what this binary encodes.
	bodyType = typeHash(reflect.TypeFor[body]())
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Encode returns the checkpoint of snap: magic, version, the length of the
// header, the header, and the body, each in deterministic CBOR.
func Encode(snap store.Snapshot) ([]byte, error) {
	b, err := encMode.Marshal(body{State: snap.State, CellsNamed: snap.CellsNamed})
	if err != nil {
		return nil, fmt.Errorf("encoding the fold: %w", err)
	}
	sum := sha256.Sum256(b)
	h, err := encMode.Marshal(header{
		TypeHash: bodyType, Stream: snap.Stream.Name, StreamCreated: snap.Stream.Created,
		Sequence: snap.Sequence, Settings: snap.Settings, BodySHA256: sum[:],
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the checkpoint's header: %w", err)
	}
	out := make([]byte, 0, len(magic)+1+binary.MaxVarintLen64+len(h)+len(b))
	out = append(out, magic...)
	out = append(out, version)
	out = binary.AppendUvarint(out, uint64(len(h)))
	out = append(out, h...)
	return append(out, b...), nil
}

// Want is what a checkpoint must agree with to be used: the stream as it
// now is, and the store's settings.
type Want struct {
	Stream store.Stream
	// LastSequence is the stream's last sequence; a checkpoint beyond it
	// is of events the stream does not hold.
	LastSequence uint64
	Settings     store.Settings
}

// Decode returns the snapshot data holds, or a *Fallback saying why it
// cannot stand in for a full fold of want's stream.
func Decode(data []byte, want Want) (store.Snapshot, error) {
	rest, ok := bytes.CutPrefix(data, []byte(magic))
	if !ok {
		return store.Snapshot{}, fallback(Corrupt, "it does not start with %q", magic)
	}
	if len(rest) == 0 || rest[0] != version {
		return store.Snapshot{}, fallback(Format, "format version %v, this binary reads %d", rest[:min(len(rest), 1)], version)
	}
	n, size := binary.Uvarint(rest[1:])
	if size <= 0 || n > uint64(len(rest)-1-size) {
		return store.Snapshot{}, fallback(Corrupt, "the header's length is damaged")
	}
	rest = rest[1+size:]
	var h header
	if err := decMode.Unmarshal(rest[:n], &h); err != nil {
		return store.Snapshot{}, fallback(Corrupt, "decoding the header: %w", err)
	}
	b := rest[n:]
	if !bytes.Equal(h.TypeHash, bodyType) {
		return store.Snapshot{}, fallback(Format, "the fold's state had another shape in the binary that wrote it")
	}
	if sum := sha256.Sum256(b); !bytes.Equal(h.BodySHA256, sum[:]) {
		return store.Snapshot{}, fallback(Corrupt, "the body's SHA-256 is not the header's")
	}
	snap := store.Snapshot{Stream: store.Stream{Name: h.Stream, Created: h.StreamCreated}, Sequence: h.Sequence, Settings: h.Settings}
	if snap.Stream.Name != want.Stream.Name || !snap.Stream.Created.Equal(want.Stream.Created) {
		return store.Snapshot{}, fallback(OtherStream, "it is of stream %s created %s, not of %s created %s",
			snap.Stream.Name, snap.Stream.Created.Format(time.RFC3339Nano), want.Stream.Name, want.Stream.Created.Format(time.RFC3339Nano))
	}
	if snap.Settings != want.Settings {
		return store.Snapshot{}, fallback(OtherSettings, "folded with %+v, not %+v", snap.Settings, want.Settings)
	}
	if snap.Sequence > want.LastSequence {
		return store.Snapshot{}, fallback(Ahead, "it covers sequence %d, beyond the stream's last, %d", snap.Sequence, want.LastSequence)
	}
	var decoded body
	if err := decMode.Unmarshal(b, &decoded); err != nil || decoded.State == nil {
		return store.Snapshot{}, fallback(Corrupt, "decoding the fold: %v", err)
	}
	// The same stream: want's value, which the store compares with ==.
	snap.Stream = want.Stream
	snap.State, snap.CellsNamed = decoded.State, decoded.CellsNamed
	return snap, nil
}

// typeHash is a SHA-256 of the structure of t as CBOR encodes it: every
// named type, kind, exported field name and tag, recursively.
func typeHash(t reflect.Type) []byte {
	h := sha256.New()
	writeType(h, t, map[reflect.Type]bool{})
	return h.Sum(nil)
}

func writeType(w io.Writer, t reflect.Type, seen map[reflect.Type]bool) {
	fmt.Fprintf(w, "%s.%s:%s(", t.PkgPath(), t.Name(), t.Kind())
	defer fmt.Fprint(w, ")")
	if seen[t] {
		return // a recursive type, written once
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice:
		writeType(w, t.Elem(), seen)
	case reflect.Array:
		fmt.Fprintf(w, "%d,", t.Len())
		writeType(w, t.Elem(), seen)
	case reflect.Map:
		writeType(w, t.Key(), seen)
		writeType(w, t.Elem(), seen)
	case reflect.Struct:
		seen[t] = true
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue // CBOR leaves it out
			}
			fmt.Fprintf(w, "%s %q ", f.Name, f.Tag)
			writeType(w, f.Type, seen)
		}
	}
}
