package store

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// hashLen is how many hex digits of SHA-256 tell sanitized names apart: 128
// bits. Two ids a publisher chooses both meet one name only after about 2^64
// hashes (the birthday bound), beyond brute force; and even then only those
// two ids collide, the loser refused in the open (see CellsNamed). Meeting the
// name of an id someone else chose takes a second preimage: 2^128 hashes.
// The whole name stays within 253 bytes: the sanitized id is cut to make room.
const hashLen = 32

// legacyHashLen is the suffix of the names sanitized before hashLen grew: a
// 40-bit hash, short enough that ids sharing a long prefix met one name after
// some 700,000 ids. Objects so named are still found by the id their status
// holds (IsNameOf), and no id is kept as a name that ends this way.
const legacyHashLen = 10

// NameSum hashes an id for the suffix of its sanitized name. It is a variable
// only so that a test can make two ids meet one name, which SHA-256 never
// lets it find; nothing else sets it.
var NameSum = func(id string) [sha256.Size]byte { return sha256.Sum256([]byte(id)) }

// ObjectName derives an object's name from a stream id, deterministically. An
// id that is a valid object name is used as it is, unless it ends the way a
// sanitized name does, now or before hashLen grew; any other id is sanitized
// and gets a suffix hashed from the exact id, so ids that sanitize alike get
// different names. Names kept as they are never end in a hash suffix and
// sanitized ones always do, so an id that spells another id's sanitized name
// is sanitized in turn, and two ids share a name only by a collision of 128
// bits of SHA-256 between ids that sanitize alike. The exact id is always in
// status.
func ObjectName(id string) string {
	if validName(id) && !hasHashSuffix(id, hashLen) && !hasHashSuffix(id, legacyHashLen) {
		return id
	}
	return sanitize(id, hashLen)
}

// LegacyObjectName is the name that versions before hashLen grew gave id.
func LegacyObjectName(id string) string {
	if validName(id) && !hasHashSuffix(id, legacyHashLen) {
		return id
	}
	return sanitize(id, legacyHashLen)
}

// IsNameOf tells whether name is one the operator gives id, or gave it before
// hashLen grew: an object created then keeps its name, and is found by the id
// in its status rather than orphaned and duplicated.
func IsNameOf(name, id string) bool {
	return name == ObjectName(id) || name == LegacyObjectName(id)
}

// NamesOf is every name IsNameOf accepts for id, to check many names
// against one id without naming it again for each. IsNameOf does not build
// it: most names are the first, and it leaves the second unbuilt.
func NamesOf(id string) []string {
	return []string{ObjectName(id), LegacyObjectName(id)}
}

func validName(id string) bool {
	return len(validation.IsDNS1123Subdomain(id)) == 0
}

// sanitize makes a valid name of id: its letters and digits, lower-cased, runs
// of anything else as one dash, cut to leave room for a dash and the first
// digits hex digits of id's hash.
func sanitize(id string, digits int) string {
	sum := NameSum(id)
	suffix := hex.EncodeToString(sum[:])[:digits]

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
	if limit := validation.DNS1123SubdomainMaxLength - digits - 1; len(base) > limit {
		base = strings.TrimRight(base[:limit], "-")
	}
	if base == "" {
		base = "cell"
	}
	return base + "-" + suffix
}

// hasHashSuffix reports whether name ends as sanitize ends the names it makes
// with a suffix of digits: a dash and that many lowercase hex digits.
func hasHashSuffix(name string, digits int) bool {
	i := len(name) - digits - 1
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
