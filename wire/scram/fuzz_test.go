package scram

import "testing"

// FuzzServer: arbitrary client SCRAM messages never panic and never
// authenticate.
func FuzzServer(f *testing.F) {
	f.Add([]byte("n,,n=,r=rOprNGfwEbeRWgbNEkqO"), []byte("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	f.Add([]byte("p=tls-server-end-point,,n=,r=abc"), []byte("c=eSws,r=abc,p=AAAA"))
	f.Add([]byte("y,a=admin,n=user,r=x"), []byte(""))
	f.Add([]byte(",,,,"), []byte(",,,"))
	v, err := NewVerifier("correct horse battery")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, first, final []byte) {
		s, err := NewServer(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Step(first); err != nil {
			return
		}
		_, _ = s.Step(final)
		if s.Valid() {
			t.Fatalf("fuzzed proof authenticated: %q %q", first, final)
		}
	})
}

// FuzzParseVerifier: verifier text never panics, and what parses formats back the same.
func FuzzParseVerifier(f *testing.F) {
	v, _ := NewVerifier("some password")
	f.Add(v.String())
	f.Add("SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB")
	f.Add("SCRAM-SHA-256$0:$:")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVerifier(s)
		if err != nil {
			return
		}
		v2, err := ParseVerifier(v.String())
		if err != nil || !v.Equal(v2) {
			t.Fatalf("round trip of %q failed: %v", s, err)
		}
	})
}
