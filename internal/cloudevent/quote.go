package cloudevent

import (
	"strconv"
	"unicode/utf8"
)

// MaxQuoted is how many bytes of a value taken from an event a reason quotes
// at most: enough to recognise an id or a type, while a reason, and the log
// line and Warning Event that carry it, stay small whatever the event holds
// (a 1 MiB id would otherwise become a 1 MiB log line on every rejection).
const MaxQuoted = 128

// Quote quotes s as %q does. Of a value longer than MaxQuoted bytes it quotes
// only the first MaxQuoted (cut back to the start of a UTF-8 character) and
// says how long the whole value is, as in "abc…"…(1048576 bytes); the length
// stands outside the quotes, so that it cannot be mistaken for part of s.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for i := 1; i < utf8.UTFMax && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
