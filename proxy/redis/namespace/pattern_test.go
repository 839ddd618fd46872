package namespace_test

import (
	"errors"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

func TestCheckPattern(t *testing.T) {
	for _, tc := range []struct {
		p            string
		maxLen, maxW int
		want         error
	}{
		{"user:*", 16, 2, nil},
		{"user:*", 5, 2, namespace.ErrPatternTooLong},
		{"user:*", 6, 1, nil},
		{"*a*b*", 0, 3, nil},
		{"*a*b*", 0, 2, namespace.ErrPatternTooComplex},
		{"*a*b*", 0, 0, nil},
		{"?[ab]*", 100, 3, nil},
		{"?[ab]*", 100, 2, namespace.ErrPatternTooComplex},
		{`\*\?\[`, 100, 0, nil},
		{`\*\?\[`, 100, 1, nil},
		{`\\*`, 100, 0, nil},
		{`a\`, 100, 1, nil},
		{"[*?]", 100, 2, namespace.ErrPatternTooComplex}, // counts conservatively
		{"", 1, 1, nil},
	} {
		err := namespace.CheckPattern([]byte(tc.p), tc.maxLen, tc.maxW)
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("CheckPattern(%q, %d, %d) = %v, want %v", tc.p, tc.maxLen, tc.maxW, err, tc.want)
		}
	}
}

func TestCountWildcards(t *testing.T) {
	for p, want := range map[string]int{
		"":         0,
		"abc":      0,
		"*":        1,
		"**":       2,
		"a?b[c]*":  3,
		`\*`:       0,
		`\\*`:      1,
		`\`:        0,
		"[*?]":     3,
		`a\[b\]*?`: 2,
	} {
		if got := namespace.CountWildcards([]byte(p)); got != want {
			t.Errorf("CountWildcards(%q) = %d, want %d", p, got, want)
		}
	}
}

func TestAppendGlobEscaped(t *testing.T) {
	for in, want := range map[string]string{
		"t:acme:": "t:acme:",
		"a*b":     `a\*b`,
		`[x]?\`:   `\[x\]\?\\`,
	} {
		got := namespace.AppendGlobEscaped(nil, []byte(in))
		if string(got) != want {
			t.Errorf("AppendGlobEscaped(%q) = %q, want %q", in, got, want)
		}
		if !namespace.Match(got, []byte(in)) {
			t.Errorf("%q does not match %q", got, in)
		}
	}
}
