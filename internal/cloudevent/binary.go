package cloudevent

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// Binary content mode, as the CloudEvents NATS protocol binding defines it
// (cloudevents/spec, cloudevents/bindings/nats-protocol-binding.md): each
// attribute is a message header named "ce-" and the attribute's name, header
// names are case-insensitive, and the payload is the data.

// attributePrefix starts the name of every attribute header.
const attributePrefix = "ce-"

// isBinary reports whether a message is in binary content mode. By the
// binding, every message whose Content-Type is not application/cloudevents
// is binary, but cellos publishes structured events with no header at all. So
// a message is binary only when it has a ce-specversion header, which every
// binary-mode event has, and no CloudEvents Content-Type, which would make it
// structured whatever else it carries.
func isBinary(header map[string][]string) bool {
	binary := false
	for key, values := range header {
		switch asciiLower(key) {
		case attributePrefix + "specversion":
			binary = true
		case "content-type":
			for _, v := range values {
				if strings.HasPrefix(asciiLower(strings.TrimLeft(v, " \t")), "application/cloudevents") {
					return false
				}
			}
		}
	}
	return binary
}

// decodeBinary reads an event in binary content mode.
//
// The reference never sees this mode. To it, such an event would be the one
// the JSON event format makes of it: the payload as `data` when it is JSON,
// and otherwise as data_base64, which it does not read. So a payload that is
// not JSON as checkJSON reads JSON (not UTF-8, not one JSON text, with a
// lone surrogate, or beyond serde_json's limits) is no data, not a rejection: a cell event then has no
// cellId and is ignored, and a formation event falls back to ce-subject for
// its id. Content-Type and ce-datacontenttype are not consulted, as the
// reference does not consult datacontenttype: the bytes say what they are.
//
// A header value that does not decode rejects the event, as the binding
// requires, and so does an attribute given two different values (in several
// headers whose names differ only in case, or several values of one header),
// since nothing would say which one to believe.
func decodeBinary(header map[string][]string, payload []byte) (Event, error) {
	attrs, err := attributes(header)
	if err != nil {
		return Event{}, &DecodeError{Reason: "binary-mode " + err.Error()}
	}
	ev := Event{ID: attrs["id"], Type: attrs["type"], Source: attrs["source"], Subject: attrs["subject"]}
	if t, ok := attrs["time"]; ok {
		ev.Time = parseTime(t)
	}
	if data := jsonData(payload); data != nil {
		ev.setData(bytes.Clone(data))
	}
	return ev, nil
}

// attributes decodes the attribute headers into values keyed by lower-case
// attribute name. Header names are visited in sorted order so that, of
// several faults, the same one is reported every time.
func attributes(header map[string][]string) (map[string]string, error) {
	keys := make([]string, 0, len(header))
	for key := range header {
		if strings.HasPrefix(asciiLower(key), attributePrefix) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	attrs := make(map[string]string, len(keys))
	for _, key := range keys {
		name := asciiLower(key[len(attributePrefix):])
		for _, raw := range header[key] {
			v, err := headerValue(raw)
			if err != nil {
				return nil, fmt.Errorf("header %s: %w", Quote(key), err)
			}
			if prev, seen := attrs[name]; seen && prev != v {
				return nil, fmt.Errorf("attribute %s has two values, %s and %s", Quote(name), Quote(prev), Quote(v))
			}
			attrs[name] = v
		}
	}
	return attrs, nil
}

// headerValue decodes one header value the way section 3.1.3.2 of the
// binding has receivers do it: the spaces and tabs NATS allows around a value
// are dropped; a value in double quotes, as older senders wrote them, is
// unquoted; then %XX escapes are decoded once, in either case, and the result
// must be UTF-8.
func headerValue(raw string) (string, error) {
	v := strings.Trim(raw, " \t")
	if strings.HasPrefix(v, `"`) {
		var err error
		if v, err = unquote(v); err != nil {
			return "", err
		}
	}
	// PathUnescape decodes %XX and nothing else: unlike QueryUnescape it
	// leaves "+" alone, as the binding does.
	v, err := url.PathUnescape(v)
	if err != nil {
		return "", fmt.Errorf("percent-decoding: %w", err)
	}
	if !utf8.ValidString(v) {
		return "", errors.New("percent-decodes to invalid UTF-8")
	}
	return v, nil
}

// unquote decodes a quoted-string of RFC 7230 section 3.2.6 that makes up
// the whole of v: a backslash takes the next character literally, and no
// control character other than a tab may appear.
func unquote(v string) (string, error) {
	if len(v) < 2 || v[len(v)-1] != '"' {
		return "", errors.New("unterminated quoted string")
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		c := v[i]
		switch c {
		case '"':
			return "", errors.New("text after a quoted string")
		case '\\':
			i++
			if i == len(v)-1 {
				return "", errors.New("unterminated quoted string")
			}
			c = v[i]
		}
		if c < ' ' && c != '\t' || c == 0x7f {
			return "", fmt.Errorf("control character %q in a quoted string", c)
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// asciiLower lower-cases the ASCII letters of s and leaves every other byte
// alone. Header names and media types are case-insensitive in ASCII only;
// strings.ToLower and strings.EqualFold would also take "K" (the Kelvin sign)
// for "k" or "ſ" for "s".
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}
