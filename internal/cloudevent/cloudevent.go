// Package cloudevent decodes the CloudEvents 1.0 that cellos publishes on the
// event stream: in the JSON event format (structured content mode), as cellos
// does, or with its attributes in NATS headers (binary content mode).
//
// Decoding is tolerant on purpose: the projection must never block the stream,
// so a member that is missing or of the wrong JSON type reads as absent rather
// than failing the whole event. Only a message that cannot be read as an event
// at all is an error, because then there is nothing to read. This mirrors the
// reference projection, which looks members up with serde_json's
// `get(..).as_str()` and so treats "absent" and "not a string" alike.
package cloudevent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Event is the subset of a CloudEvent the projection reads; `specversion`
// and `datacontenttype` are not decoded, because no rule depends on them. Members that are absent or not JSON strings (attribute headers that
// are absent, in binary mode) are left empty instead of failing the decode,
// so that, for example, `"type": 42` yields an event that is ignored
// downstream rather than rejected.
type Event struct {
	ID   string
	Type string
	// Source tells the operator's own events from the producers'.
	Source  string
	Subject string
	// Time is the `time` attribute parsed as RFC 3339 (see parseTime); nil
	// when absent, not a string or not RFC 3339, because a wrong timestamp is
	// worse than none.
	Time *time.Time
	// Data is the event's data as raw JSON: the `data` member, else the
	// decoded `data_base64` when that is JSON (see decodeStructured), or in
	// binary mode the payload when it is JSON (see decodeBinary); nil when
	// there is none. It never aliases the payload given to Decode, so callers may keep
	// it after reusing the buffer.
	Data json.RawMessage

	// data holds the members of Data, split once by Decode so that each
	// lookup is a short scan instead of a fresh JSON parse.
	data dataMembers
}

// dataMembers caches the top-level members of Data.
type dataMembers struct {
	parsed  bool
	members []member
}

// member is one top-level member of a JSON object: its unescaped key and its
// raw value (trimmed of surrounding whitespace).
type member struct {
	key   []byte
	value []byte
}

// DecodeError reports a message that cannot be read as a CloudEvent at all.
// It is the only error type Decode returns, so callers can count and surface
// rejections uniformly.
type DecodeError struct {
	// Reason says why, in words fit for a log line or a status condition.
	Reason string
}

// Error returns the reason unchanged so it can be surfaced verbatim.
func (e *DecodeError) Error() string { return e.Reason }

// Decode reads a CloudEvent from a NATS message: its header, nil when it has
// none, and its payload. Both content modes yield the same Event, so that the
// fold cannot tell them apart. A message that cannot be read as an event
// returns a *DecodeError. Decode never panics.
func Decode(header map[string][]string, payload []byte) (Event, error) {
	if isBinary(header) {
		return decodeBinary(header, payload)
	}
	return decodeStructured(payload)
}

// decodeStructured reads an event in the JSON event format. The payload must
// be a JSON object as checkJSON reads JSON.
func decodeStructured(payload []byte) (Event, error) {
	if err := checkJSON(payload, 0); err != nil {
		return Event{}, &DecodeError{Reason: "payload is not JSON: " + err.Error()}
	}
	start := skipSpace(payload, 0)
	if payload[start] != '{' {
		return Event{}, &DecodeError{Reason: "payload is " + kindOf(payload[start]) + ", not an object"}
	}

	var ev Event
	var timeRaw, dataRaw, base64Raw []byte
	// The payload is valid JSON, so walking it cannot go out of bounds; later
	// duplicates overwrite earlier ones, as both encoding/json and serde_json do.
	walkObject(payload[start:], func(key, value []byte) {
		switch string(key) {
		case "id":
			ev.ID, _ = stringValue(value)
		case "type":
			ev.Type, _ = stringValue(value)
		case "source":
			ev.Source, _ = stringValue(value)
		case "subject":
			ev.Subject, _ = stringValue(value)
		case "time":
			timeRaw = value
		case "data":
			dataRaw = value
		case "data_base64":
			base64Raw = value
		}
	})
	if s, ok := stringValue(timeRaw); ok {
		ev.Time = parseTime(s)
	}
	switch {
	case dataRaw != nil:
		ev.setData(bytes.Clone(dataRaw))
	case base64Raw != nil:
		// The reference reads `data` only, so to it an event that carries
		// its data as data_base64 has none. Going beyond it, the decoded
		// bytes are the data when they are JSON; when they are not, or the
		// base64 is invalid, the event has no data, just as the reference
		// sees it, rather than being rejected for a member it never reads.
		if s, ok := stringValue(base64Raw); ok {
			if b, ok := decodeBase64(s); ok {
				ev.setData(jsonData(b))
			}
		}
	}
	return ev, nil
}

// setData makes raw the event's data and splits its members once.
func (e *Event) setData(raw json.RawMessage) {
	e.Data = raw
	e.data = dataMembers{parsed: true, members: objectMembers(raw)}
}

// jsonData returns b without surrounding whitespace when it is JSON as
// checkJSON reads it, and nil, no data, when it is not: for data that does
// not come as a JSON member, the bytes alone say whether it is JSON. It reads
// b as the `data` member it stands for, one level inside the event, so that
// its nesting counts as it would in the JSON event format.
// (bytes.TrimSpace trims only JSON whitespace here: no other space can
// stand outside the value of a valid JSON text.)
func jsonData(b []byte) json.RawMessage {
	if checkJSON(b, 1) != nil {
		return nil
	}
	return bytes.TrimSpace(b)
}

// decodeBase64 decodes data_base64, which the CloudEvents JSON format
// defines as base64 per RFC 4648: the standard alphabet, with padding.
// encoding/base64 would skip CR and LF, which RFC 4648 section 3.3 has
// decoders refuse, so those are refused first; Strict refuses non-zero
// padding bits, so that one string of data has one spelling.
func decodeBase64(s string) ([]byte, bool) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, false
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	return b, err == nil
}

// checkJSON returns why b, nested depth arrays or objects deep, is not one
// JSON text as serde_json, the reference's parser, reads it, or nil when it
// is. json.Valid alone is not enough: it passes invalid UTF-8 and escapes of
// lone UTF-16 surrogates ("\ud800" without a trailing "\udc00".."\udfff" right
// after it, or a trailing one alone), which encoding/json then decodes as
// U+FFFD, so that two different ids would read as one. serde_json refuses the
// whole document instead ("lone leading surrogate in hex escape", "unexpected
// end of hex escape"), and so does this. It also refuses what goes beyond
// serde_json's limits (see beyondSerde).
func checkJSON(b []byte, depth int) error {
	if !utf8.Valid(b) {
		return errors.New("invalid UTF-8")
	}
	if !json.Valid(b) {
		// Only the error path pays for a second pass, to get a precise message.
		if err := json.Unmarshal(b, new(json.RawMessage)); err != nil {
			return err
		}
		return errors.New("invalid JSON")
	}
	if at := loneSurrogate(b); at >= 0 {
		return fmt.Errorf("the escape %s at byte %d is a lone UTF-16 surrogate", b[at:at+6], at)
	}
	return beyondSerde(b, depth)
}

// DataString returns the value of the first of keys whose member in data is a
// JSON string. Keys whose value is absent or of another type are passed over,
// which is how the reference chains `get(k).and_then(as_str).or_else(..)`. An
// empty string counts as present: the reference stops at `Some("")` too.
// Data that is not an object has no members.
func (e Event) DataString(keys ...string) (string, bool) {
	members := e.members()
	for _, k := range keys {
		if v := lookup(members, k); v != nil {
			if s, ok := stringValue(v); ok {
				return s, true
			}
		}
	}
	return "", false
}

// DataInt64 returns data[key] when it is a JSON integer that fits in int64,
// as serde_json's as_i64, which the reference uses, reads it: `3` and `-3`
// are integers; `3.0`, `3e0`, `"3"`, `-0` (which serde_json reads as the
// float -0.0) and integers beyond int64 are not.
func (e Event) DataInt64(key string) (int64, bool) {
	return int64Value(lookup(e.members(), key))
}

// members returns the cached members of Data, or splits Data now when the
// Event was built by hand rather than by Decode.
func (e Event) members() []member {
	if e.data.parsed {
		return e.data.members
	}
	if len(e.Data) == 0 || !json.Valid(e.Data) {
		return nil
	}
	return objectMembers(e.Data)
}

// lookup returns the raw value of key, or nil. It scans backwards so that the
// last duplicate wins, matching a map-based decoder.
func lookup(members []member, key string) []byte {
	for i := len(members) - 1; i >= 0; i-- {
		if string(members[i].key) == key {
			return members[i].value
		}
	}
	return nil
}

// objectMembers splits a valid JSON value into its top-level members; a value
// that is not an object has none.
func objectMembers(raw []byte) []member {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil
	}
	// Event data objects have a handful of members; one allocation covers them.
	members := make([]member, 0, 8)
	walkObject(raw[i:], func(key, value []byte) {
		members = append(members, member{key: key, value: value})
	})
	return members
}

// kindOf names the JSON kind that starts with c, for error messages.
func kindOf(c byte) string {
	switch c {
	case '[':
		return "a JSON array"
	case '"':
		return "a JSON string"
	case 't', 'f':
		return "a JSON boolean"
	case 'n':
		return "JSON null"
	default:
		return "a JSON number"
	}
}
