package fold

import (
	"fmt"
	"unicode/utf8"
)

// CanonicalID reads a formation id and returns it in its canonical form,
// lowercase hyphenated, accepting exactly the spellings the reference
// accepts. Ids are compared only in this form: the fold keys formations by
// it, and a label, subject or message id in any other spelling names no
// formation. The reference keys
// formations with the Rust uuid crate's Uuid::parse_str, whose parser
// (uuid-rs/uuid, src/parser.rs, try_parse, as of 1.23) decides by length
// alone:
//
//   - 32 bytes: simple, 32 hex digits;
//   - 36 bytes: hyphenated, 8-4-4-4-12 hex digits, hyphens at 8, 13, 18, 23;
//   - 38 bytes: braced, "{" hyphenated "}"; braces around the simple form
//     (34 bytes) are refused;
//   - 45 bytes: "urn:uuid:" hyphenated, the prefix in lower case only, and
//     never around the simple form.
//
// Hex digits may be upper or lower case, mixed too. Nothing else is
// accepted: no surrounding space, no other wrapper of the right length such
// as "(...)" or a quoted UUID, no "URN:UUID:" (all of which
// github.com/google/uuid would take, so that an id the reference refuses
// would have become a formation here).
func CanonicalID(s string) (string, error) {
	start, body := 0, s
	switch {
	case len(s) == 38 && s[0] == '{' && s[37] == '}':
		start, body = 1, s[1:37]
	case len(s) == 45 && s[:9] == "urn:uuid:":
		start, body = 9, s[9:]
	case len(s) != 32 && len(s) != 36:
		return "", fmt.Errorf("%d bytes are none of 32 hex digits, 8-4-4-4-12, {8-4-4-4-12} or urn:uuid:8-4-4-4-12", len(s))
	}
	hyphenated := len(body) == 36
	var out [36]byte
	n := 0
	for i := 0; i < len(body); i++ {
		c := body[i]
		if hyphenated && (i == 8 || i == 13 || i == 18 || i == 23) {
			if c != '-' {
				return "", fmt.Errorf("%s where a hyphen belongs", charAt(s, start+i))
			}
			continue
		}
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			c += 'a' - 'A'
		default:
			return "", fmt.Errorf("%s is not a hex digit", charAt(s, start+i))
		}
		if n == 8 || n == 13 || n == 18 || n == 23 {
			out[n] = '-'
			n++
		}
		out[n] = c
		n++
	}
	return string(out[:]), nil
}

// charAt names the character that starts at byte i of s, for an error.
func charAt(s string, i int) string {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return fmt.Sprintf("%q at byte %d", r, i)
}

// IsCanonical tells whether s is a formation id in its canonical form.
func IsCanonical(s string) bool {
	id, err := CanonicalID(s)
	return err == nil && id == s
}
