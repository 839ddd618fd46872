package token

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestGenerateKeyIDs(t *testing.T) {
	for _, id := range []string{"a", "2026-01", "key.v2_x-y", strings.Repeat("k", 64)} {
		if _, err := GenerateKey(id); err != nil {
			t.Errorf("GenerateKey(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", ".a", "-a", "a b", "a/b", "a:b", "ké", strings.Repeat("k", 65), "a\n"} {
		if _, err := GenerateKey(id); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("GenerateKey(%q): %v, want ErrInvalidKey", id, err)
		}
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	k := mustKey(t, "2026-01")
	sk, err := ParseSigningKey(k.MarshalPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !sk.Equal(k) || sk.ID() != "2026-01" || !sk.Public().Equal(k.Public()) {
		t.Fatal("signing key changed in a PEM round trip")
	}
	if k.Equal(mustKey(t, "2026-01")) || k.Equal(nil) {
		t.Fatal("Equal: different keys compare equal")
	}
	pk, err := ParseVerificationKey(k.Public().MarshalPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !pk.Equal(k.Public()) || pk.ID() != "2026-01" {
		t.Fatal("verification key changed in a PEM round trip")
	}
	// The parsed keys work: sign with the parsed signing key, verify with
	// the parsed verification key.
	v, _ := NewVerifier(pk)
	if _, err := v.Verify(mustSign(t, sk, claimsFor("acme", "alice")), testNow); err != nil {
		t.Fatal(err)
	}
	if got := len(k.Public().MarshalPEM()); got > 3000 {
		t.Errorf("verification key PEM is %d bytes", got)
	}
}

func TestParseVerificationKeysBundle(t *testing.T) {
	a, b := mustKey(t, "a"), mustKey(t, "b")
	bundle := append(append([]byte("\n"), a.Public().MarshalPEM()...), append([]byte("\r\n\n"), b.Public().MarshalPEM()...)...)
	keys, err := ParseVerificationKeys(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !keys[0].Equal(a.Public()) || !keys[1].Equal(b.Public()) {
		t.Fatal("bundle parsed wrong")
	}
	if _, err := ParseVerificationKey(bundle); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("ParseVerificationKey of two blocks: %v", err)
	}
	dup := append(a.Public().MarshalPEM(), mustKey(t, "a").Public().MarshalPEM()...)
	if _, err := ParseVerificationKeys(dup); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("duplicate key ids: %v", err)
	}
}

func TestParseKeyRefusals(t *testing.T) {
	k := mustKey(t, "k1")
	spem, ppem := string(k.MarshalPEM()), string(k.Public().MarshalPEM())
	body := func(pemText string) string { // the base64 lines
		lines := strings.Split(strings.TrimSpace(pemText), "\n")
		return strings.Join(lines[4:len(lines)-1], "\n")
	}
	block := func(typ string, headers []string, b64 string) string {
		return "-----BEGIN " + typ + "-----\n" + strings.Join(headers, "\n") + "\n\n" + b64 + "\n-----END " + typ + "-----\n"
	}
	hdrs := []string{"Algorithm: " + Algorithm, "Key-Id: k1"}
	short := base64.StdEncoding.EncodeToString(make([]byte, seedLen-1))
	tests := map[string]struct {
		signing bool
		text    string
	}{
		"empty":                {true, ""},
		"whitespace":           {false, " \n"},
		"garbage":              {true, "hello"},
		"text before block":    {true, "key:\n" + spem},
		"text after block":     {true, spem + "x"},
		"two signing blocks":   {true, spem + spem},
		"verification as sign": {true, ppem},
		"signing as verify":    {false, spem},
		"broken block skipped": {true, "-----BEGIN " + pemSigningType + "-----\n!!!\n" + spem},
		"no headers":           {true, block(pemSigningType, nil, body(spem))},
		"extra header":         {true, block(pemSigningType, append(hdrs, "Comment: x"), body(spem))},
		"wrong algorithm":      {true, block(pemSigningType, []string{"Algorithm: ed25519", "Key-Id: k1"}, body(spem))},
		"bad key id":           {true, block(pemSigningType, []string{"Algorithm: " + Algorithm, "Key-Id: a b"}, body(spem))},
		"empty key id":         {true, block(pemSigningType, []string{"Algorithm: " + Algorithm, "Key-Id: "}, body(spem))},
		"short seed":           {true, block(pemSigningType, hdrs, short)},
		"long public key":      {false, block(pemVerificationType, hdrs, body(ppem)+"AAAA")},
		"short public key":     {false, block(pemVerificationType, hdrs, body(ppem)[:100])},
	}
	for name, tc := range tests {
		var err error
		if tc.signing {
			_, err = ParseSigningKey([]byte(tc.text))
		} else {
			_, err = ParseVerificationKeys([]byte(tc.text))
		}
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: %v, want ErrInvalidKey", name, err)
		}
	}
	// The hand-built block with the right headers does parse, so the
	// refusals above are for the reason their names give.
	if _, err := ParseSigningKey([]byte(block(pemSigningType, hdrs, body(spem)))); err != nil {
		t.Fatalf("hand-built block: %v", err)
	}
}

// TestSigningKeyNotPrinted: formatting a SigningKey, or a struct holding
// one, prints its id and not its seeds.
func TestSigningKeyNotPrinted(t *testing.T) {
	k := mustKey(t, "k1")
	holder := struct{ Key SigningKey }{*k}
	out := fmt.Sprintf("%v %+v %#v %s %v %+v %#v", k, k, k, *k, holder, holder, holder)
	secrets := [][]byte{k.seed[:edSeedLen], k.seed[edSeedLen:]}
	for _, s := range secrets {
		for _, enc := range []string{hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s)[:40], fmt.Sprint(s[:8])[1:20]} {
			if strings.Contains(out, enc) {
				t.Fatalf("key material printed: %s", out)
			}
		}
	}
	if !strings.Contains(out, "token.SigningKey(k1)") || bytes.Contains([]byte(out), []byte("PRIVATE")) {
		t.Fatalf("unexpected output %s", out)
	}
}
