package token

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

// fuzzState is shared by every FuzzVerify run in a process: a key made at
// random when the fuzzer starts (so no stored input can carry its valid
// signature) and the tokens it signed as seeds, the only inputs allowed to
// verify.
var fuzzState = sync.OnceValues(func() (*Verifier, map[string]bool) {
	k, err := GenerateKey("fuzz")
	if err != nil {
		panic(err)
	}
	v, err := NewVerifier(k.Public())
	if err != nil {
		panic(err)
	}
	issued := map[string]bool{}
	for _, c := range []Claims{claimsFor("acme", "alice"), claimsFor("t"+strings.Repeat("x", 62), strings.Repeat("u", 255))} {
		tok, err := k.Sign(c)
		if err != nil {
			panic(err)
		}
		issued[tok] = true
	}
	return v, issued
})

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, every
// error must wrap exactly one Verify sentinel, input longer than
// MaxTokenLen must be ErrMalformed, and nothing but a token the key really
// issued may verify. Stored seeds in testdata/fuzz/FuzzVerify are tokens
// signed by other keys under the same key id "fuzz" (which get as far as
// the signature check) and inputs the fuzzer found interesting.
func FuzzVerify(f *testing.F) {
	v, issued := fuzzState()
	for tok := range issued {
		f.Add(tok)
		f.Add(tok[:len(tok)/2])
		f.Add("tg2." + strings.TrimPrefix(tok, Prefix))
	}
	f.Add("")
	f.Add(Prefix)
	f.Add("tg1.AQE.")
	now := testNow
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(s, now)
		if err == nil {
			if !issued[s] {
				t.Fatalf("input verified: %q as %+v", s, c)
			}
			return
		}
		checkOneSentinel(t, err)
		if c != (Claims{}) {
			t.Fatalf("claims returned with error %v", err)
		}
		if len(s) > MaxTokenLen && !errors.Is(err, ErrMalformed) {
			t.Fatalf("%d-byte input: %v, want ErrMalformed", len(s), err)
		}
	})
}
