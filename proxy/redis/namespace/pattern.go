package namespace

import (
	"errors"
	"fmt"
)

// Errors CheckPattern wraps.
var (
	// ErrPatternTooLong: the pattern is longer than allowed.
	ErrPatternTooLong = errors.New("namespace: pattern too long")
	// ErrPatternTooComplex: the pattern has too many wildcards.
	ErrPatternTooComplex = errors.New("namespace: pattern has too many wildcards")
)

// CheckPattern bounds a client's glob pattern (KEYS, SCAN MATCH,
// PSUBSCRIBE...): at most maxLen bytes and at most maxWildcards unescaped
// '*', '?' and '[' (Redis's matcher backtracks on each '*', and a pattern
// subscription is matched against every message published by any
// tenant). A limit of 0 or less is not checked. The error wraps
// ErrPatternTooLong or ErrPatternTooComplex.
func CheckPattern(p []byte, maxLen, maxWildcards int) error {
	if maxLen > 0 && len(p) > maxLen {
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrPatternTooLong, len(p), maxLen)
	}
	if maxWildcards > 0 {
		if n := CountWildcards(p); n > maxWildcards {
			return fmt.Errorf("%w: %d, at most %d allowed", ErrPatternTooComplex, n, maxWildcards)
		}
	}
	return nil
}

// CountWildcards returns the number of '*', '?' and '[' in p that a
// backslash does not escape. It over-counts rather than under-counts: a
// '*' or '?' inside brackets is counted too.
func CountWildcards(p []byte) int {
	n := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '*', '?', '[':
			n++
		}
	}
	return n
}

// AppendGlobEscaped appends s to dst with a backslash before every glob
// metacharacter ('*', '?', '[', ']', '\'), giving a pattern that matches s
// and nothing else.
func AppendGlobEscaped(dst, s []byte) []byte {
	for _, c := range s {
		if isGlobMeta(c) {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return dst
}

func isGlobMeta(c byte) bool {
	return c == '*' || c == '?' || c == '[' || c == ']' || c == '\\'
}

func hasGlobMeta(s string) bool {
	for i := range len(s) {
		if isGlobMeta(s[i]) {
			return true
		}
	}
	return false
}
