package cloudevent

import "time"

// parseTime reads an RFC 3339 date-time (section 5.6) and returns it in UTC,
// or nil when s is not one.
//
// Go's parsers are no help to the letter of the RFC: time.Parse takes a comma
// before the fraction, a one-digit hour and an offset of +24:00, and
// Time.UnmarshalText, documented as strict, falls back to the same leniency
// (go.dev/issue/54580). They also refuse the lower-case "t" and "z" that the
// RFC allows and that Rust's chrono and time crates accept. So the syntax is
// checked here, and Go only checks the ranges (month, day of month, hour,
// minute, second) on a copy spelled with upper-case "T" and "Z".
//
// A leap second (":60") is valid RFC 3339 but has no time.Time; it reads as
// no time rather than as a time one second off.
func parseTime(s string) *time.Time {
	if !isRFC3339(s) {
		return nil
	}
	b := []byte(s)
	b[10] = 'T'
	if last := len(b) - 1; b[last] == 'z' {
		b[last] = 'Z'
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return nil
	}
	t = t.UTC()
	return &t
}

// isRFC3339 reports whether s is spelled as an RFC 3339 date-time:
// YYYY-MM-DD, "T" or "t", hh:mm:ss, an optional "." and one or more digits,
// then "Z", "z" or an offset ±hh:mm whose hour is below 24 and minute below
// 60. Ranges of the date and time proper are left to time.Parse.
func isRFC3339(s string) bool {
	const prefix = "dddd-dd-ddTdd:dd:dd"
	if len(s) < len(prefix)+1 {
		return false
	}
	for i := range len(prefix) {
		switch want := prefix[i]; want {
		case 'd':
			if !isDigit(s[i]) {
				return false
			}
		case 'T':
			if s[i] != 'T' && s[i] != 't' {
				return false
			}
		default:
			if s[i] != want {
				return false
			}
		}
	}
	rest := s[len(prefix):]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && isDigit(rest[n]) {
			n++
		}
		if n == 1 {
			return false
		}
		rest = rest[n:]
	}
	switch {
	case rest == "Z" || rest == "z":
		return true
	case len(rest) == len("+hh:mm") && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		hh, mm := rest[1:3], rest[4:6]
		return isDigit(hh[0]) && isDigit(hh[1]) && isDigit(mm[0]) && isDigit(mm[1]) &&
			hh < "24" && mm < "60"
	default:
		return false
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
