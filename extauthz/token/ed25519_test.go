package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"filippo.io/edwards25519"
)

// edKey must accept exactly the signatures crypto/ed25519.Verify accepts.

// sameVerdict fails the test if edKey and crypto/ed25519 disagree.
func sameVerdict(t testing.TB, k *edKey, pub ed25519.PublicKey, msg, sig []byte) bool {
	t.Helper()
	want := ed25519.Verify(pub, msg, sig)
	if got := k.verify(msg, sig); got != want {
		t.Fatalf("edKey.verify = %v, crypto/ed25519.Verify = %v\npub %x\nmsg %x\nsig %x", got, want, pub, msg, sig)
	}
	return want
}

func TestEdKeyMatchesCryptoEd25519(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	valid := 0
	for range 8 {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k := newEdKey(pub)
		for range 40 {
			msg := make([]byte, r.IntN(300))
			for i := range msg {
				msg[i] = byte(r.Uint32())
			}
			sig := ed25519.Sign(priv, msg)
			if sameVerdict(t, k, pub, msg, sig) {
				valid++
			}
			// One bit flipped anywhere in the signature or the message.
			bad := append([]byte(nil), sig...)
			bad[r.IntN(len(bad))] ^= 1 << r.IntN(8)
			sameVerdict(t, k, pub, msg, bad)
			if len(msg) > 0 {
				m2 := append([]byte(nil), msg...)
				m2[r.IntN(len(m2))] ^= 1 << r.IntN(8)
				sameVerdict(t, k, pub, m2, sig)
			}
			// S + L: the same scalar, not canonical.
			sameVerdict(t, k, pub, msg, addL(sig))
			// Wrong length.
			sameVerdict(t, k, pub, msg, sig[:63])
		}
	}
	if valid != 8*40 {
		t.Fatalf("%d of %d good signatures verified", valid, 8*40)
	}
}

// addL returns sig with L added to S (little-endian), when that fits.
func addL(sig []byte) []byte {
	l, _ := new(big.Int).SetString("7237005577332262213973186563042994811857633241324440082426009812508952813233", 10) // 2^252 + 27742317777372353535851937790883648493
	s := new(big.Int).SetBytes(reverse(sig[32:]))
	s.Add(s, l)
	b := s.FillBytes(make([]byte, 33))
	out := append([]byte(nil), sig[:32]...)
	return append(out, reverse(b[1:])...)
}

func reverse(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[len(b)-1-i] = b[i]
	}
	return out
}

// TestEdKeyOddKeys: keys that are not points, the identity (every message
// verifies with R = [S]B), and a low-order point.
func TestEdKeyOddKeys(t *testing.T) {
	identity := edwards25519.NewIdentityPoint().Bytes()
	S, _ := edwards25519.NewScalar().SetCanonicalBytes(append([]byte{7}, make([]byte, 31)...))
	R := new(edwards25519.Point).ScalarBaseMult(S).Bytes()
	forged := append(append([]byte(nil), R...), S.Bytes()...)
	lowOrder := make([]byte, 32) // (0, -1): order 2
	lowOrder[0] = 0xec
	for i := 1; i < 31; i++ {
		lowOrder[i] = 0xff
	}
	lowOrder[31] = 0x7f
	notAPoint := make([]byte, 32)
	notAPoint[0] = 2 // y = 2 is not on the curve
	for _, tc := range []struct {
		name string
		pub  []byte
	}{
		{"identity", identity},
		{"low order", lowOrder},
		{"not a point", notAPoint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newEdKey(tc.pub)
			for _, msg := range [][]byte{nil, []byte("a"), []byte("tenantguard")} {
				sameVerdict(t, k, tc.pub, msg, forged)
			}
		})
	}
}

// TestSignedDigits: the digits add up to the scalar.
func TestSignedDigits(t *testing.T) {
	r := mrand.New(mrand.NewPCG(3, 4))
	for range 1000 {
		var wide [64]byte
		for i := 0; i < 64; i += 8 {
			binary.LittleEndian.PutUint64(wide[i:], r.Uint64())
		}
		s, _ := edwards25519.NewScalar().SetUniformBytes(wide[:])
		var d [digits]int8
		signedDigits(s.Bytes(), &d)
		sum := new(big.Int)
		for i := digits - 1; i >= 0; i-- {
			if d[i] < -multiples || d[i] >= multiples {
				t.Fatalf("digit %d = %d", i, d[i])
			}
			sum.Lsh(sum, window)
			sum.Add(sum, big.NewInt(int64(d[i])))
		}
		if want := new(big.Int).SetBytes(reverse(s.Bytes())); sum.Cmp(want) != 0 {
			t.Fatalf("digits sum to %v, want %v", sum, want)
		}
	}
}

// FuzzEdKey: any signature and message get crypto/ed25519's verdict.
func FuzzEdKey(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	k := newEdKey(pub)
	msg := []byte("tenantguard-token-v1 payload")
	sig := ed25519.Sign(priv, msg)
	f.Add(msg, sig)
	f.Add(msg, addL(sig))
	f.Add([]byte{}, make([]byte, 64))
	f.Fuzz(func(t *testing.T, msg, sig []byte) {
		sameVerdict(t, k, pub, msg, sig)
		if len(msg) > 0 {
			good := ed25519.Sign(priv, msg)
			sameVerdict(t, k, pub, msg, good)
		}
	})
}

func BenchmarkEd25519Verify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte(domain + "a 53-byte payload, as for the token in the package doc")
	sig := ed25519.Sign(priv, msg)
	k := newEdKey(pub)
	b.Run("crypto/ed25519", func(b *testing.B) {
		for b.Loop() {
			ed25519.Verify(pub, msg, sig)
		}
	})
	b.Run("edKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			k.verify(msg, sig)
		}
	})
}
