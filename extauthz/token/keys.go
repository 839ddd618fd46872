package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"fmt"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Sizes of the hybrid key and signature encodings.
const (
	seedLen   = ed25519.SeedSize + mldsa65.SeedSize           // 64: signing key material
	pubLen    = ed25519.PublicKeySize + mldsa65.PublicKeySize // 1984
	sigLen    = ed25519.SignatureSize + mldsa65.SignatureSize // 3373
	edSigLen  = ed25519.SignatureSize
	edSeedLen = ed25519.SeedSize
)

// SigningKey signs tokens. It is two independent keys, Ed25519 and
// ML-DSA-65, derived from two 32-byte seeds, under one key id that every
// token it signs carries. Only the session service should hold it.
//
// String and GoString print only the key id, so logging a SigningKey (or a
// struct holding one) does not leak it; use MarshalPEM to store it.
type SigningKey struct {
	id   string
	seed [seedLen]byte // ed25519 seed || ml-dsa-65 seed
	ed   ed25519.PrivateKey
	ml   *mldsa65.PrivateKey
	pub  *VerificationKey
}

// VerificationKey checks the signatures of one SigningKey: its Ed25519 and
// ML-DSA-65 public keys under the same key id. It is not secret.
type VerificationKey struct {
	id  string
	raw [pubLen]byte // ed25519 public key || packed ml-dsa-65 public key
	ed  ed25519.PublicKey
	edk *edKey // ed with its precomputed multiples, for verify
	ml  *mldsa65.PublicKey
}

// GenerateKey returns a new signing key with fresh random seeds. The id
// names it in tokens and in a Verifier; it must be 1..64 characters of
// [A-Za-z0-9._-] starting with a letter or digit, and should be unique over
// the deployment's lifetime (a date such as "2026-01" works well).
func GenerateKey(id string) (*SigningKey, error) {
	var seed [seedLen]byte
	_, _ = rand.Read(seed[:]) // never fails since Go 1.24
	return newSigningKey(id, seed)
}

// newSigningKey derives both key pairs from seed.
func newSigningKey(id string, seed [seedLen]byte) (*SigningKey, error) {
	if !validKeyID(id) {
		return nil, fmt.Errorf("%w: key id %q is not 1..64 characters of [A-Za-z0-9._-] starting with a letter or digit", ErrInvalidKey, id)
	}
	var mlSeed [mldsa65.SeedSize]byte
	copy(mlSeed[:], seed[edSeedLen:])
	mlPub, mlPriv := mldsa65.NewKeyFromSeed(&mlSeed)
	k := &SigningKey{id: id, seed: seed, ed: ed25519.NewKeyFromSeed(seed[:edSeedLen]), ml: mlPriv}
	var raw [pubLen]byte
	copy(raw[:], k.ed.Public().(ed25519.PublicKey))
	copy(raw[ed25519.PublicKeySize:], mlPub.Bytes())
	k.pub = newVerificationKey(id, raw)
	return k, nil
}

// newVerificationKey unpacks raw; every byte string of the right length is
// a public key for both schemes, so it cannot fail.
func newVerificationKey(id string, raw [pubLen]byte) *VerificationKey {
	k := &VerificationKey{id: id, raw: raw}
	k.ed = ed25519.PublicKey(k.raw[:ed25519.PublicKeySize])
	k.edk = newEdKey(k.ed)
	var mlRaw [mldsa65.PublicKeySize]byte
	copy(mlRaw[:], raw[ed25519.PublicKeySize:])
	k.ml = new(mldsa65.PublicKey)
	k.ml.Unpack(&mlRaw)
	return k
}

// ID returns the key id written into every token this key signs.
func (k *SigningKey) ID() string { return k.id }

// Public returns the verification key that checks this key's tokens.
func (k *SigningKey) Public() *VerificationKey { return k.pub }

// Equal reports whether k and o are the same key under the same id,
// comparing the secret seeds in constant time.
func (k *SigningKey) Equal(o *SigningKey) bool {
	return o != nil && k.id == o.id && subtle.ConstantTimeCompare(k.seed[:], o.seed[:]) == 1
}

// String returns "token.SigningKey(<id>)" and never the key material.
func (k SigningKey) String() string { return "token.SigningKey(" + k.id + ")" }

// GoString is String, so %#v does not print the key material either.
func (k SigningKey) GoString() string { return k.String() }

// ID returns the key id this key verifies tokens for.
func (k *VerificationKey) ID() string { return k.id }

// Equal reports whether k and o are the same public keys under the same id.
func (k *VerificationKey) Equal(o *VerificationKey) bool {
	return o != nil && k.id == o.id && k.raw == o.raw
}

// verify reports whether sig (ed25519 || ml-dsa-65) is a valid pair of
// signatures of msg. It stops at the first failure; ML-DSA-65 goes first
// because with circl's AVX2 code it is the cheaper check (about 19µs
// against 43µs for Ed25519; the two are about equal in pure Go), so most
// forgeries cost the least. Which half failed is not secret. Ed25519 is
// checked with the key's precomputed tables (edKey), which accepts exactly
// what crypto/ed25519.Verify accepts in a third of its time.
func (k *VerificationKey) verify(msg, sig []byte) bool {
	if len(sig) != sigLen || !mldsa65.Verify(k.ml, msg, nil, sig[edSigLen:]) {
		return false
	}
	return k.edk.verify(msg, sig[:edSigLen])
}
