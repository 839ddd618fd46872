package namespace

// Match reports whether the glob pattern matches s exactly as redis-server
// 7.0's case-sensitive stringmatchlen does (KEYS, SCAN MATCH, PSUBSCRIBE,
// PUBSUB CHANNELS): '*' matches any run of bytes, '?' any one byte,
// "[...]" a set with "^" negation, "a-z" ranges (in either order) and
// backslash escapes, and '\' escapes the next byte. Its quirks are kept: an
// unterminated '[' set ends at the end of the pattern, a trailing '\'
// matches itself, bytes from 0x80 compare as negative numbers in ranges
// (C's signed char on x86-64), and "*" does not match the empty string
// (KEYS and SCAN special-case a pattern of "*" before calling it).
func Match(pattern, s []byte) bool {
	skipLonger := false
	return match(pattern, 0, s, 0, &skipLonger)
}

// at returns p[i], or the NUL terminator C sees past the end.
func at(p []byte, i int) byte {
	if i < len(p) {
		return p[i]
	}
	return 0
}

// match is stringmatchlen_impl on p[pi:] and s[si:]: pi and si are the C
// pointers, len(p)-pi and len(s)-si the C lengths.
func match(p []byte, pi int, s []byte, si int, skipLonger *bool) bool {
	for pi < len(p) && si < len(s) {
		switch p[pi] {
		case '*':
			for at(p, pi+1) == '*' {
				pi++
			}
			if len(p)-pi == 1 {
				return true
			}
			for si < len(s) {
				if match(p, pi+1, s, si, skipLonger) {
					return true
				}
				if *skipLonger {
					return false
				}
				si++
			}
			// No match for the rest of the pattern from anywhere in the rest
			// of s: a longer match for an earlier '*' cannot help either.
			*skipLonger = true
			return false
		case '?':
			si++
		case '[':
			var ok bool
			if pi, ok = matchSet(p, pi+1, s[si]); !ok {
				return false
			}
			si++
		case '\\':
			if len(p)-pi >= 2 {
				pi++
			}
			fallthrough
		default:
			if p[pi] != s[si] {
				return false
			}
			si++
		}
		pi++
		if si == len(s) {
			for at(p, pi) == '*' {
				pi++
			}
			break
		}
	}
	return pi == len(p) && si == len(s)
}

// matchSet matches c against the set starting at p[pi] (just after '[')
// and returns the position of its closing ']' (or of its last byte when
// unterminated), as the C code leaves its pointer.
func matchSet(p []byte, pi int, c byte) (end int, ok bool) {
	not := at(p, pi) == '^'
	if not {
		pi++
	}
	matched := false
	for {
		switch {
		case at(p, pi) == '\\' && len(p)-pi >= 2:
			pi++
			if p[pi] == c {
				matched = true
			}
		case at(p, pi) == ']':
			return pi, matched != not
		case pi >= len(p):
			return pi - 1, matched != not
		case len(p)-pi >= 3 && p[pi+1] == '-':
			lo, hi, x := int8(p[pi]), int8(p[pi+2]), int8(c)
			if lo > hi {
				lo, hi = hi, lo
			}
			pi += 2
			if lo <= x && x <= hi {
				matched = true
			}
		case p[pi] == c:
			matched = true
		}
		pi++
	}
}
