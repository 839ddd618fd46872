package token

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// testNow is the fixed clock of the tests.
var testNow = time.Unix(1_800_000_000, 0)

func mustKey(t testing.TB, id string) *SigningKey {
	t.Helper()
	k, err := GenerateKey(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustVerifier(t testing.TB, keys ...*SigningKey) *Verifier {
	t.Helper()
	v, err := NewVerifier()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := v.AddKey(k.Public()); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func mustSign(t testing.TB, k *SigningKey, c Claims) string {
	t.Helper()
	tok, err := k.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claimsFor(tenant, user string) Claims {
	return Claims{
		SessionID: SessionID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		TenantID:  tenant,
		UserID:    user,
		IssuedAt:  testNow.Add(-time.Minute),
		ExpiresAt: testNow.Add(time.Hour),
	}
}

// rawPayload is a payload with every field under the test's control, to
// sign things Sign itself would refuse.
type rawPayload struct {
	ver, alg          byte
	sid               SessionID
	iat, exp          int64
	kid, tenant, user string
	extra             []byte
	cut               int // bytes removed from the end
}

func goodRaw(kid string) rawPayload {
	c := claimsFor("acme", "alice")
	return rawPayload{ver: version1, alg: algHybrid, sid: c.SessionID,
		iat: c.IssuedAt.Unix(), exp: c.ExpiresAt.Unix(), kid: kid, tenant: c.TenantID, user: c.UserID}
}

func (r rawPayload) bytes() []byte {
	p := appendPayload(nil, r.ver, r.alg, r.sid, r.iat, r.exp, r.kid, r.tenant, r.user)
	p = append(p, r.extra...)
	return p[:len(p)-r.cut]
}

// forge signs arbitrary payload bytes with k, bypassing Sign's checks.
func forge(t testing.TB, k *SigningKey, r rawPayload) string {
	t.Helper()
	tok, err := k.signPayload(r.bytes())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// split returns a token's decoded payload and signature.
func split(t testing.TB, tok string) (payload, sig []byte) {
	t.Helper()
	p64, s64, _ := strings.Cut(strings.TrimPrefix(tok, Prefix), ".")
	payload, err := b64.DecodeString(p64)
	if err != nil {
		t.Fatal(err)
	}
	sig, err = b64.DecodeString(s64)
	if err != nil {
		t.Fatal(err)
	}
	return payload, sig
}

// join frames payload and signature bytes as a token, unsigned.
func join(payload, sig []byte) string {
	return Prefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// setLowBit sets the lowest bit of the last base64 character of s, which is
// a padding bit when len(s)%4 is 2 or 3: same bytes, non-canonical text.
func setLowBit(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i|1])
}
