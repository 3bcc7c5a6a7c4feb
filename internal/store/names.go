package store

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// hashLen is how many hex digits of SHA-256 tell sanitized names apart.
const hashLen = 10

// ObjectName derives an object's name from a stream id, deterministically. An
// id that is a valid object name is used as it is, unless it ends the way a
// sanitized name does; any other id is sanitized and gets a suffix hashed
// from the exact id, so ids that sanitize alike get different names. Names
// kept as they are never end in a hash suffix and sanitized ones always do,
// so an id that spells another id's sanitized name is sanitized in turn, and
// two ids share a name only by a collision of 40 bits of SHA-256 between ids
// that sanitize alike. The exact id is always in status.
func ObjectName(id string) string {
	if len(validation.IsDNS1123Subdomain(id)) == 0 && !hasHashSuffix(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	suffix := hex.EncodeToString(sum[:])[:hashLen]

	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(id) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	base := strings.Trim(b.String(), "-")
	if limit := validation.DNS1123SubdomainMaxLength - hashLen - 1; len(base) > limit {
		base = strings.TrimRight(base[:limit], "-")
	}
	if base == "" {
		base = "cell"
	}
	return base + "-" + suffix
}

// hasHashSuffix reports whether name ends as ObjectName ends the names it
// sanitizes: a dash and hashLen lowercase hex digits.
func hasHashSuffix(name string) bool {
	i := len(name) - hashLen - 1
	if i < 0 || name[i] != '-' {
		return false
	}
	for _, c := range name[i+1:] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
