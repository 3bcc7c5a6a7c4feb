package store

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// The stamp rule, in one place: which stream and sequence a status was
// written from, and what a reconcile or the pruner may conclude from it.

// Stamp is the streamStamp of a status that reflects the object ref up to seq
// of stream. Only a status written from this stream's projection carries it,
// so a status whose stamp differs was written from another stream or edited
// by hand.
func Stamp(stream Stream, ref Ref, seq uint64) string {
	h := sha256.New()
	for _, part := range []string{stream.Name, stream.Created.UTC().Format(time.RFC3339Nano), string(ref.Kind), ref.ID, strconv.FormatUint(seq, 10)} {
		// Length-prefixed, so that no two different tuples hash alike.
		h.Write([]byte(strconv.Itoa(len(part)) + ":" + part))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// Ahead tells whether a status reflects later events of the same stream than
// the projection, at sequence projected: a replica further along wrote it,
// and writing would move it backwards. Only a valid stamp makes a status
// ahead; one of another stream, or edited by hand, is overwritten.
func Ahead(stream Stream, ref Ref, projected uint64, statusSequence int64, stamp string) bool {
	return statusSequence > int64(projected) && stampedAt(stream, ref, statusSequence, stamp)
}

// Foreign tells whether a status was stamped from another stream: stamped,
// at a sequence, but not with the stamp this stream gives it there. An
// unstamped status (written before stamps) is not foreign.
func Foreign(stream Stream, ref Ref, statusSequence int64, stamp string) bool {
	return stamp != "" && statusSequence > 0 && !stampedAt(stream, ref, statusSequence, stamp)
}

// stampedAt tells whether stamp is the one this stream gives ref's status at
// statusSequence.
func stampedAt(stream Stream, ref Ref, statusSequence int64, stamp string) bool {
	return statusSequence >= 0 && stamp == Stamp(stream, ref, uint64(statusSequence))
}
