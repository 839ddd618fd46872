package token

import (
	"crypto/ed25519"
	"testing"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

func BenchmarkGenerateKey(b *testing.B) {
	for b.Loop() {
		if _, err := GenerateKey("k1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	k := mustKey(b, "2026-01")
	c := claimsFor("acme", "alice")
	for b.Loop() {
		if _, err := k.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	k := mustKey(b, "2026-01")
	v := mustVerifier(b, k)
	tok := mustSign(b, k, claimsFor("acme", "alice"))
	b.SetBytes(int64(len(tok)))
	for b.Loop() {
		if _, err := v.Verify(tok, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyParallel is Verify on every core, as in ext_authz.
func BenchmarkVerifyParallel(b *testing.B) {
	k := mustKey(b, "2026-01")
	v := mustVerifier(b, k)
	tok := mustSign(b, k, claimsFor("acme", "alice"))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(tok, testNow); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkVerifyRefused is the cost of refusing forgeries: garbage is
// refused before any signature check, a bad ML-DSA-65 half before Ed25519,
// and a good ML-DSA-65 half with a bad Ed25519 half (the costliest refusal)
// pays for both.
func BenchmarkVerifyRefused(b *testing.B) {
	k := mustKey(b, "2026-01")
	v := mustVerifier(b, k)
	tok := mustSign(b, k, claimsFor("acme", "alice"))
	payload, sig := split(b, tok)
	badEd := append([]byte(nil), sig...)
	badEd[0] ^= 1
	badML := append([]byte(nil), sig...)
	badML[len(badML)-100] ^= 1
	for name, t := range map[string]string{
		"malformed":  tok[:len(tok)-1],
		"badEd25519": join(payload, badEd),
		"badMLDSA":   join(payload, badML),
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := v.Verify(t, testNow); err == nil {
					b.Fatal("verified")
				}
			}
		})
	}
}

// BenchmarkPrimitives splits Sign and Verify into their two signatures.
func BenchmarkPrimitives(b *testing.B) {
	k := mustKey(b, "2026-01")
	msg := []byte(domain + "a 53-byte payload, as for the token in the package doc")
	edSig := ed25519.Sign(k.ed, msg)
	mlSig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(k.ml, msg, nil, true, mlSig); err != nil {
		b.Fatal(err)
	}
	b.Run("Ed25519Sign", func(b *testing.B) {
		for b.Loop() {
			ed25519.Sign(k.ed, msg)
		}
	})
	b.Run("Ed25519Verify", func(b *testing.B) {
		for b.Loop() {
			ed25519.Verify(k.pub.ed, msg, edSig)
		}
	})
	b.Run("MLDSA65Sign", func(b *testing.B) {
		for b.Loop() {
			_ = mldsa65.SignTo(k.ml, msg, nil, true, mlSig)
		}
	})
	b.Run("MLDSA65Verify", func(b *testing.B) {
		if err := mldsa65.SignTo(k.ml, msg, nil, true, mlSig); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if !mldsa65.Verify(k.pub.ml, msg, nil, mlSig) {
				b.Fatal("refused")
			}
		}
	})
}
