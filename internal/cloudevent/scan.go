package cloudevent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// The scanner below walks JSON that json.Valid has already accepted. It exists
// because decoding the envelope and its data into maps costs dozens of
// allocations per event, on the hot path of replaying a whole stream. It still
// bounds-checks every step, so bytes it was not meant to see cannot make it
// panic; the fuzz test checks it against encoding/json.

// skipSpace returns the index of the first non-whitespace byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// endOfString returns the index just past the string token that starts at
// b[i] (a quote) and whether it contains escapes; -1 when it is unterminated.
func endOfString(b []byte, i int) (int, bool) {
	escaped := false
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++ // the escaped byte cannot end the string
		case '"':
			return i + 1, escaped
		}
	}
	return -1, escaped
}

// endOfValue returns the index just past the JSON value that starts at b[i].
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := endOfString(b, i)
		if end < 0 {
			return len(b)
		}
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, _ := endOfString(b, i)
				if end < 0 {
					return len(b)
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// walkObject calls fn with the key and raw value of each member of the object
// that starts at obj[0], in document order. Keys with escapes are unescaped so
// that `"typ\u0065"` still names `type`, as any JSON decoder would have it.
func walkObject(obj []byte, fn func(key, value []byte)) {
	i := skipSpace(obj, 1)
	for i < len(obj) && obj[i] == '"' {
		keyEnd, escaped := endOfString(obj, i)
		if keyEnd < 0 {
			return
		}
		key := obj[i+1 : keyEnd-1]
		if escaped {
			key = unescape(obj[i:keyEnd])
		}
		i = skipSpace(obj, keyEnd)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		i = skipSpace(obj, i+1)
		if i >= len(obj) {
			return
		}
		valueEnd := endOfValue(obj, i)
		fn(key, obj[i:valueEnd])
		i = skipSpace(obj, valueEnd)
		if i >= len(obj) || obj[i] != ',' {
			return
		}
		i = skipSpace(obj, i+1)
	}
}

// unescape decodes a string token that contains escapes. It is the rare path,
// so it leans on encoding/json for the escape rules.
func unescape(token []byte) []byte {
	var s string
	if err := json.Unmarshal(token, &s); err != nil {
		return token
	}
	return []byte(s)
}

// loneSurrogate returns the offset of the first \u escape in the JSON text b
// that encodes a UTF-16 surrogate without its pair, or -1 when there is none.
// Outside strings JSON has no backslash, so every backslash in valid JSON
// starts an escape: the scan jumps from backslash to backslash and decodes
// only \u escapes, and a payload without escapes costs one IndexByte.
func loneSurrogate(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\\')
		if j < 0 || i+j+1 >= len(b) {
			return -1
		}
		i += j
		if b[i+1] != 'u' {
			i += 2 // a one-character escape, perhaps of a backslash
			continue
		}
		r, ok := hexEscape(b, i)
		switch {
		case !ok:
			return -1 // not valid JSON; json.Valid reports it
		case 0xD800 <= r && r <= 0xDBFF:
			if next, ok := hexEscape(b, i+6); ok && 0xDC00 <= next && next <= 0xDFFF {
				i += 12
				continue
			}
			return i
		case 0xDC00 <= r && r <= 0xDFFF:
			return i
		}
		i += 6
	}
}

// maxDepth is the deepest nesting of arrays and objects that serde_json, the
// reference's parser, reads: its recursion limit of 128 counts down one for
// each array or object opened and fails when it reaches zero, so it refuses
// the 128th level (serde_json's own test_stack_overflow: 127 nested arrays
// parse, and 128 fail at column 128). encoding/json goes to 10000, so a
// deeper payload would move a phase here and not in the reference.
const maxDepth = 127

// maxPlainDigits is the longest number without an exponent that needs no
// range check: 308 digits stay below 1e308, under math.MaxFloat64.
const maxPlainDigits = 308

// beyondSerde returns why serde_json would refuse the valid JSON text b, which
// sits depth arrays or objects deep, for a limit that json.Valid does not
// have: nesting deeper than maxDepth, or a number beyond float64's range
// (serde_json's "number out of range", such as 1e400 or an integer of 400
// digits; numbers too small for float64 read as 0 in both). It is one pass
// that skips strings whole and parses only numbers that could be out of
// range, so a payload without such numbers costs a scan.
func beyondSerde(b []byte, depth int) error {
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			end, _ := endOfString(b, i)
			if end < 0 {
				return nil // not valid JSON; json.Valid reports it
			}
			i = end
			continue
		case c == '[' || c == '{':
			depth++
			if depth > maxDepth {
				return fmt.Errorf("arrays and objects nest more than %d deep at byte %d, beyond serde_json's recursion limit", maxDepth, i)
			}
		case c == ']' || c == '}':
			depth--
		case c == '-' || '0' <= c && c <= '9':
			end := endOfValue(b, i)
			if !inFloat64Range(b[i:end]) {
				return fmt.Errorf("the number at byte %d (%d bytes) is out of float64's range", i, end-i)
			}
			i = end
			continue
		}
		i++
	}
	return nil
}

// inFloat64Range tells whether the JSON number num, rounded to a float64, is
// finite, as serde_json requires of every number it reads.
func inFloat64Range(num []byte) bool {
	if len(num) <= maxPlainDigits && !bytes.ContainsAny(num, "eE") {
		return true
	}
	f, _ := strconv.ParseFloat(string(num), 64)
	return !math.IsInf(f, 0)
}

// hexEscape decodes the \uXXXX escape at b[i:], if there is one.
func hexEscape(b []byte, i int) (rune, bool) {
	if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[i+2 : i+6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// stringValue returns the Go string of a raw JSON string value; any other
// value (or none) is not a string, like serde_json's as_str.
func stringValue(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// int64Value reads a raw JSON number as an int64 when it is an integer in
// range; see Event.DataInt64 for which numbers count.
func int64Value(raw []byte) (int64, bool) {
	neg := len(raw) > 0 && raw[0] == '-'
	digits := raw
	if neg {
		digits = raw[1:]
	}
	if len(digits) == 0 || (neg && len(digits) == 1 && digits[0] == '0') {
		return 0, false
	}
	// The magnitude is accumulated as a uint64, whose range holds that of
	// the smallest int64.
	const limit = uint64(1) << 63
	var v uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false // fraction, exponent, or not a number at all
		}
		d := uint64(c - '0')
		if v > (limit-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	if neg {
		return int64(-v), true //nolint:gosec // -2^63 wraps to itself, the smallest int64
	}
	if v == limit {
		return 0, false
	}
	return int64(v), true
}
