package namespace_test

import (
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// matchCases are worked out by hand from redis-server 7.0's stringmatchlen;
// TestMatchAgainstRedis checks them (and random ones) against a real server.
var matchCases = []struct {
	pattern, s string
	want       bool
}{
	{"", "", true},
	{"", "a", false},
	{"a", "", false},
	{"*", "", false}, // KEYS/SCAN special-case "*" before matching
	{"**", "", false},
	{"*", "abc", true},
	{"a*", "abc", true},
	{"*c", "abc", true},
	{"*a", "bbbb", false},
	{"a*c", "ac", true},
	{"a*b*c", "aXbYc", true},
	{"a*b*c", "aXbYcZ", false},
	{"a**c", "abbc", true},
	{"a?c", "abc", true},
	{"a?c", "ac", false},
	{"a?", "a", false},
	{"h[ae]llo", "hello", true},
	{"h[ae]llo", "hallo", true},
	{"h[ae]llo", "hillo", false},
	{"h[^e]llo", "hallo", true},
	{"h[^e]llo", "hello", false},
	{"h[a-b]llo", "hbllo", true},
	{"h[b-a]llo", "hallo", true}, // reversed range
	{"h[a-b]llo", "hcllo", false},
	{`\*`, "*", true},
	{`\*`, "a", false},
	{`\?`, "?", true},
	{`a\`, `a\`, true}, // trailing backslash matches itself
	{`\\`, `\`, true},
	{"[abc", "a", true}, // unterminated set
	{"[abc", "ab", false},
	{"[abc", "d", false},
	{"[", "[", false},
	{"[a-]", "]", true}, // "a-]" is the range ']'..'a'
	{"[a-]", "_", true},
	{"[a-]", "-", false},
	{`[\]]`, "]", true},
	{`[\]]`, `\`, false},
	{`[\`, `\`, true},
	{"[]", "a", false},
	{"[^]", "a", true},
	{"[^a-c]x", "dx", true},
	{"[^a-c]x", "bx", false},
	{"[\x01-\xff]", "a", false}, // signed char: the range is -1..1
	{"[\x01-\xff]", "\xff", true},
	{"[\x80-\xff]", "\x90", true},
	{"*\\", `a\`, true},
	{"a*", "a", true},
	{"t:acme:*", "t:acme:", true},
	{"t:acme:*", "t:acm:e", false},
	{"\x00*", "\x00x", true},
}

func TestMatch(t *testing.T) {
	for _, tc := range matchCases {
		if got := namespace.Match([]byte(tc.pattern), []byte(tc.s)); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestMatchBacktrackingIsBounded(t *testing.T) {
	// The CVE-2022-36021 pattern: without skipLongerMatches this takes
	// exponential time.
	p := []byte("a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b")
	s := make([]byte, 4000)
	for i := range s {
		s[i] = 'a'
	}
	if namespace.Match(p, s) {
		t.Fatal("matched")
	}
}
