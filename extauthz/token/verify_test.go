package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var allVerifyErrors = []error{ErrMalformed, ErrUnsupportedVersion, ErrUnknownKey, ErrBadSignature, ErrExpired, ErrNotYetValid}

// checkOneSentinel fails unless err wraps exactly one Verify sentinel.
func checkOneSentinel(t testing.TB, err error) {
	t.Helper()
	n := 0
	for _, s := range allVerifyErrors {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %v wraps %d Verify sentinels, want 1", err, n)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	k := mustKey(t, "2026-01")
	v := mustVerifier(t, k)
	c := claimsFor("acme", "alice")
	c.KeyID = "ignored"
	c.IssuedAt = c.IssuedAt.Add(700 * time.Millisecond) // dropped by Sign
	tok := mustSign(t, k, c)
	if len(tok) != 4574 {
		t.Errorf("token length %d, want 4574 (see the package doc)", len(tok))
	}
	got, err := v.Verify(tok, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got.SessionID != c.SessionID || got.TenantID != "acme" || got.UserID != "alice" || got.KeyID != "2026-01" ||
		!got.IssuedAt.Equal(c.IssuedAt.Truncate(time.Second)) || !got.ExpiresAt.Equal(c.ExpiresAt) {
		t.Fatalf("claims %+v, signed %+v", got, c)
	}
	if tok2 := mustSign(t, k, c); tok2 == tok {
		t.Error("two signatures of the same claims are identical; ML-DSA-65 signing should be hedged")
	} else if _, err := v.Verify(tok2, testNow); err != nil {
		t.Fatal(err)
	}
}

func TestMaxSizeToken(t *testing.T) {
	kid, tenant, user := strings.Repeat("k", MaxKeyIDLen), "t"+strings.Repeat("x", MaxTenantIDLen-1), strings.Repeat("u", MaxUserIDLen)
	k := mustKey(t, kid)
	tok := mustSign(t, k, claimsFor(tenant, user))
	if len(tok) != MaxTokenLen || MaxTokenLen != 5062 {
		t.Fatalf("max token %d bytes, MaxTokenLen %d, want both 5062", len(tok), MaxTokenLen)
	}
	if _, err := mustVerifier(t, k).Verify(tok, testNow); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	k := mustKey(t, "k1")
	other := mustKey(t, "k2")    // not in the verifier
	impostor := mustKey(t, "k1") // same id, different key
	v := mustVerifier(t, k)
	good := mustSign(t, k, claimsFor("acme", "alice"))
	p64, s64, _ := strings.Cut(strings.TrimPrefix(good, Prefix), ".")
	edit := func(f func(*rawPayload)) string {
		r := goodRaw("k1")
		f(&r)
		return forge(t, k, r)
	}
	// A payload of length 1 mod 3 has 4 padding bits in its last character;
	// the good one is 0 mod 3 and has none.
	odd := edit(func(r *rawPayload) { r.user = "alice" + "x" })
	if n := len(odd) - len(Prefix) - sigB64 - 1; n%4 != 2 {
		t.Fatalf("odd payload: %d characters", n)
	}
	op64, _, _ := strings.Cut(strings.TrimPrefix(odd, Prefix), ".")

	tests := []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"valid", good, testNow, nil},
		{"valid odd length", odd, testNow, nil},
		{"valid just before expiry", good, testNow.Add(time.Hour - time.Nanosecond), nil},
		{"valid at issued-at plus skew", edit(func(r *rawPayload) { r.iat = testNow.Add(DefaultClockSkew).Unix() }), testNow, nil},

		{"empty", "", testNow, ErrMalformed},
		{"prefix only", Prefix, testNow, ErrMalformed},
		{"no prefix", strings.TrimPrefix(good, Prefix), testNow, ErrMalformed},
		{"bearer scheme left in", "Bearer " + good, testNow, ErrMalformed},
		{"upper-case prefix", "TG1." + strings.TrimPrefix(good, Prefix), testNow, ErrMalformed},
		{"no signature part", Prefix + p64, testNow, ErrMalformed},
		{"empty payload part", Prefix + "." + s64, testNow, ErrMalformed},
		{"trailing dot", good + ".", testNow, ErrMalformed},
		{"trailing character", good + "A", testNow, ErrMalformed},
		{"trailing newline", good + "\n", testNow, ErrMalformed},
		{"leading space", " " + good, testNow, ErrMalformed},
		{"third part", Prefix + p64 + "." + s64[:len(s64)-2] + ".A", testNow, ErrMalformed},
		{"newline inside payload", Prefix + p64[:10] + "\n" + p64[10:len(p64)-1] + "." + s64, testNow, ErrMalformed},
		{"CRLF inside signature", Prefix + p64 + "." + s64[:100] + "\r\n" + s64[102:], testNow, ErrMalformed},
		{"padding on payload", Prefix + op64[:len(op64)-2] + "==." + s64, testNow, ErrMalformed},
		{"std base64 alphabet", Prefix + p64 + "." + strings.NewReplacer("-", "+", "_", "/").Replace(s64), testNow, ErrMalformed},
		{"non-canonical payload bits", Prefix + setLowBit(op64) + "." + strings.SplitN(odd, ".", 3)[2], testNow, ErrMalformed},
		{"non-canonical signature bits", Prefix + p64 + "." + setLowBit(s64), testNow, ErrMalformed},
		{"oversized", Prefix + strings.Repeat("A", MaxTokenLen), testNow, ErrMalformed},
		{"oversized by one", good + strings.Repeat("A", MaxTokenLen-len(good)+1), testNow, ErrMalformed},
		{"huge", strings.Repeat("A", 1<<20), testNow, ErrMalformed},
		{"trailing payload byte", edit(func(r *rawPayload) { r.extra = []byte{0} }), testNow, ErrMalformed},
		{"truncated payload", edit(func(r *rawPayload) { r.cut = 1 }), testNow, ErrMalformed},
		{"user length past end", edit(func(r *rawPayload) { r.extra = []byte{}; r.cut = 5 }), testNow, ErrMalformed},
		{"empty tenant", edit(func(r *rawPayload) { r.tenant = "" }), testNow, ErrMalformed},
		{"empty user", edit(func(r *rawPayload) { r.user = "" }), testNow, ErrMalformed},
		{"upper-case tenant", edit(func(r *rawPayload) { r.tenant = "Acme" }), testNow, ErrMalformed},
		{"tenant starts with dash", edit(func(r *rawPayload) { r.tenant = "-acme" }), testNow, ErrMalformed},
		{"tenant with dot", edit(func(r *rawPayload) { r.tenant = "acme.corp" }), testNow, ErrMalformed},
		{"tenant with NUL", edit(func(r *rawPayload) { r.tenant = "acme\x00" }), testNow, ErrMalformed},
		{"tenant of 64 bytes", edit(func(r *rawPayload) { r.tenant = strings.Repeat("a", 64) }), testNow, ErrMalformed},
		{"user with space", edit(func(r *rawPayload) { r.user = "al ice" }), testNow, ErrMalformed},
		{"user with newline", edit(func(r *rawPayload) { r.user = "alice\n" }), testNow, ErrMalformed},
		{"user not ASCII", edit(func(r *rawPayload) { r.user = "alicé" }), testNow, ErrMalformed},
		{"empty key id", edit(func(r *rawPayload) { r.kid = "" }), testNow, ErrMalformed},
		{"bad key id", edit(func(r *rawPayload) { r.kid = ".k1" }), testNow, ErrMalformed},
		{"zero session id", edit(func(r *rawPayload) { r.sid = SessionID{} }), testNow, ErrMalformed},
		{"expiry equals issued-at", edit(func(r *rawPayload) { r.exp = r.iat }), testNow, ErrMalformed},
		{"expiry before issued-at", edit(func(r *rawPayload) { r.exp = r.iat - 1 }), testNow, ErrMalformed},
		{"issued-at zero", edit(func(r *rawPayload) { r.iat = 0 }), testNow, ErrMalformed},
		{"issued-at negative", edit(func(r *rawPayload) { r.iat = -1 << 62 }), testNow, ErrMalformed},
		{"expiry past 9999", edit(func(r *rawPayload) { r.exp = maxUnix + 1 }), testNow, ErrMalformed},

		{"version 2 prefix", "tg2." + strings.TrimPrefix(good, Prefix), testNow, ErrUnsupportedVersion},
		{"version 10 prefix", "tg10.AAAA", testNow, ErrUnsupportedVersion},
		{"version byte 2", edit(func(r *rawPayload) { r.ver = 2 }), testNow, ErrUnsupportedVersion},
		{"version byte 0", edit(func(r *rawPayload) { r.ver = 0 }), testNow, ErrUnsupportedVersion},
		{"algorithm byte 2", edit(func(r *rawPayload) { r.alg = 2 }), testNow, ErrUnsupportedVersion},
		{"algorithm byte 0", edit(func(r *rawPayload) { r.alg = 0 }), testNow, ErrUnsupportedVersion},

		{"unknown key id", mustSign(t, other, claimsFor("acme", "alice")), testNow, ErrUnknownKey},
		{"same key id, other key", mustSign(t, impostor, claimsFor("acme", "alice")), testNow, ErrBadSignature},
		{"signature of another token", Prefix + p64 + "." + strings.SplitN(odd, ".", 3)[2], testNow, ErrBadSignature},
		{"expired and forged: signature first", mustSign(t, impostor, claimsFor("acme", "alice")), testNow.Add(48 * time.Hour), ErrBadSignature},

		{"expired at expiry", good, testNow.Add(time.Hour), ErrExpired},
		{"expired long ago", good, testNow.Add(1000 * time.Hour), ErrExpired},
		{"not yet valid", edit(func(r *rawPayload) { r.iat = testNow.Add(DefaultClockSkew + time.Second).Unix() }), testNow, ErrNotYetValid},
		{"not yet valid, far future", edit(func(r *rawPayload) { r.iat, r.exp = maxUnix-1, maxUnix }), testNow, ErrNotYetValid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token, tc.now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			checkOneSentinel(t, err)
			if c != (Claims{}) {
				t.Fatalf("claims %+v returned with an error", c)
			}
		})
	}
}

func TestClockSkew(t *testing.T) {
	k := mustKey(t, "k1")
	v := mustVerifier(t, k)
	r := goodRaw("k1")
	r.iat = testNow.Add(10 * time.Second).Unix()
	tok := forge(t, k, r)
	if _, err := v.Verify(tok, testNow); err != nil {
		t.Fatalf("default skew: %v", err)
	}
	v.SetClockSkew(5 * time.Second)
	if _, err := v.Verify(tok, testNow); !errors.Is(err, ErrNotYetValid) {
		t.Fatalf("5s skew: %v, want ErrNotYetValid", err)
	}
	if _, err := v.Verify(tok, testNow.Add(5*time.Second)); err != nil {
		t.Fatalf("5s skew, 5s later: %v", err)
	}
	v.SetClockSkew(-time.Hour) // counts as zero
	if _, err := v.Verify(tok, testNow.Add(10*time.Second)); err != nil {
		t.Fatalf("zero skew at issued-at: %v", err)
	}
	if _, err := v.Verify(tok, testNow.Add(10*time.Second-time.Nanosecond)); !errors.Is(err, ErrNotYetValid) {
		t.Fatalf("zero skew just before issued-at: %v", err)
	}
}

// TestHybridBothRequired: a token whose Ed25519 or ML-DSA-65 half alone is
// valid is refused, so a break of either scheme alone forges nothing.
func TestHybridBothRequired(t *testing.T) {
	k := mustKey(t, "k1")
	v := mustVerifier(t, k)
	tok := mustSign(t, k, claimsFor("acme", "alice"))
	payload, sig := split(t, tok)
	otherSig := func() []byte { _, s := split(t, mustSign(t, mustKey(t, "k1"), claimsFor("acme", "alice"))); return s }()
	garble := func(b []byte) {
		for i := range b {
			b[i] ^= byte(0x5a + i)
		}
	}
	cases := map[string]func(s []byte){
		"ml-dsa zeroed":          func(s []byte) { clear(s[edSigLen:]) },
		"ml-dsa garbled":         func(s []byte) { garble(s[edSigLen:]) },
		"ml-dsa from other key":  func(s []byte) { copy(s[edSigLen:], otherSig[edSigLen:]) },
		"ml-dsa last byte":       func(s []byte) { s[len(s)-1] ^= 1 },
		"ed25519 zeroed":         func(s []byte) { clear(s[:edSigLen]) },
		"ed25519 garbled":        func(s []byte) { garble(s[:edSigLen]) },
		"ed25519 from other key": func(s []byte) { copy(s[:edSigLen], otherSig[:edSigLen]) },
		"both zeroed":            func(s []byte) { clear(s) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			s := append([]byte(nil), sig...)
			f(s)
			if _, err := v.Verify(join(payload, s), testNow); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify: %v, want ErrBadSignature", err)
			}
		})
	}
	// The halves really are valid on their own.
	msg := append([]byte(domain), payload...)
	half := append([]byte(nil), sig...)
	clear(half[edSigLen:])
	if k.pub.verify(msg, half) {
		t.Fatal("verify accepted a zeroed ML-DSA-65 half")
	}
	if !k.pub.verify(msg, sig) {
		t.Fatal("verify refused the genuine signature")
	}
}

func TestTenantCannotBeChanged(t *testing.T) {
	k := mustKey(t, "k1")
	v := mustVerifier(t, k)
	tokA := mustSign(t, k, claimsFor("acme", "alice"))
	tokB := mustSign(t, k, claimsFor("globex", "alice"))
	payloadA, sigA := split(t, tokA)
	payloadB, _ := split(t, tokB)

	for _, tenant := range []string{"acmf", "globex", "acm", "acme-evil", "a"} {
		r := goodRaw("k1")
		r.tenant = tenant
		forged := join(r.bytes(), sigA)
		if c, err := v.Verify(forged, testNow); !errors.Is(err, ErrBadSignature) {
			t.Errorf("tenant %q with A's signature: %+v, %v; want ErrBadSignature", tenant, c, err)
		}
	}
	if _, err := v.Verify(join(payloadB, sigA), testNow); !errors.Is(err, ErrBadSignature) {
		t.Errorf("B's payload with A's signature: %v", err)
	}
	// The tenant bytes, edited in place.
	i := strings.Index(string(payloadA), "acme")
	for _, repl := range []string{"acmf", "bcme", "ACME", "glob"} {
		p := append([]byte(nil), payloadA...)
		copy(p[i:], repl)
		if _, err := v.Verify(join(p, sigA), testNow); err == nil {
			t.Errorf("tenant edited to %q verified", repl)
		}
	}
}

// TestBitFlips flips every bit of every byte of a token: nothing verifies.
func TestBitFlips(t *testing.T) {
	k := mustKey(t, "k1")
	v := mustVerifier(t, k)
	tok := mustSign(t, k, claimsFor("acme", "alice"))
	step := 1
	if testing.Short() {
		step = 7
	}
	b := []byte(tok)
	for i := 0; i < len(b); i += step {
		for bit := 0; bit < 8; bit++ {
			b[i] ^= 1 << bit
			c, err := v.Verify(string(b), testNow)
			b[i] ^= 1 << bit
			if err == nil {
				t.Fatalf("byte %d bit %d flipped: verified as %+v", i, bit, c)
			}
			checkOneSentinel(t, err)
		}
	}
}

// TestTruncation verifies every proper prefix of a token: all are refused
// as malformed, without panicking.
func TestTruncation(t *testing.T) {
	k := mustKey(t, "k1")
	v := mustVerifier(t, k)
	tok := mustSign(t, k, claimsFor("acme", "alice"))
	for n := 0; n < len(tok); n++ {
		if _, err := v.Verify(tok[:n], testNow); !errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d bytes: %v, want ErrMalformed", n, err)
		}
		if _, err := v.Verify(tok[n+1:], testNow); err == nil {
			t.Fatalf("suffix from %d verified", n+1)
		}
	}
}

func TestRotation(t *testing.T) {
	old, cur := mustKey(t, "2026-01"), mustKey(t, "2026-02")
	v, err := NewVerifier(old.Public())
	if err != nil {
		t.Fatal(err)
	}
	tokOld := mustSign(t, old, claimsFor("acme", "alice"))
	tokCur := mustSign(t, cur, claimsFor("acme", "alice"))
	if _, err := v.Verify(tokCur, testNow); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("new key before it is added: %v", err)
	}
	if err := v.AddKey(cur.Public()); err != nil {
		t.Fatal(err)
	}
	if err := v.AddKey(cur.Public()); err != nil {
		t.Fatalf("adding the same key twice: %v", err)
	}
	if err := v.AddKey(mustKey(t, "2026-02").Public()); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("a different key under an id in use: %v, want ErrInvalidKey", err)
	}
	if err := v.AddKey(nil); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("nil key: %v", err)
	}
	if got := strings.Join(v.KeyIDs(), ","); got != "2026-01,2026-02" {
		t.Fatalf("KeyIDs %s", got)
	}
	for tok, kid := range map[string]string{tokOld: "2026-01", tokCur: "2026-02"} {
		if c, err := v.Verify(tok, testNow); err != nil || c.KeyID != kid {
			t.Fatalf("both keys present: %+v, %v; want key %s", c, err, kid)
		}
	}
	if !v.RemoveKey("2026-01") || v.RemoveKey("2026-01") {
		t.Fatal("RemoveKey results wrong")
	}
	if _, err := v.Verify(tokOld, testNow); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old key after removal: %v, want ErrUnknownKey", err)
	}
	if c, err := v.Verify(tokCur, testNow); err != nil || c.KeyID != "2026-02" {
		t.Fatalf("current key after removal: %+v, %v", c, err)
	}
	if _, err := NewVerifier(old.Public(), mustKey(t, "2026-01").Public()); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("NewVerifier with a duplicate id: %v", err)
	}
}

func TestZeroVerifier(t *testing.T) {
	k := mustKey(t, "k1")
	tok := mustSign(t, k, claimsFor("acme", "alice"))
	var v Verifier
	if _, err := v.Verify(tok, testNow); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("zero Verifier: %v", err)
	}
	if v.RemoveKey("k1") || len(v.KeyIDs()) != 0 {
		t.Fatal("zero Verifier is not empty")
	}
	if err := v.AddKey(k.Public()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok, testNow); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentRotation runs Verify while keys are added and removed (run
// with -race).
func TestConcurrentRotation(t *testing.T) {
	a, b := mustKey(t, "a"), mustKey(t, "b")
	v := mustVerifier(t, a)
	tokA := mustSign(t, a, claimsFor("acme", "alice"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			_ = v.AddKey(b.Public())
			v.RemoveKey("b")
			v.SetClockSkew(time.Duration(i) * time.Second)
		}
	}()
	for i := 0; i < 20; i++ {
		if _, err := v.Verify(tokA, testNow); err != nil {
			t.Error(err)
		}
	}
	<-done
}
