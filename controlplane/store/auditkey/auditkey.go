// Package auditkey holds the Ed25519 keys that sign the policy store's
// audit chain: the control plane signs each entry's hash with its signing
// key, which the database never sees, and verifies entries with the public
// halves of its current and earlier keys. The public keys are not secret:
// hand them to auditors, who can then verify the chain offline but cannot
// extend or rewrite it.
//
// Key files are standard PEM, as OpenSSL writes them:
//
//	openssl genpkey -algorithm ed25519 -out audit.key     # PKCS #8 "PRIVATE KEY", keep it 0600
//	openssl pkey -in audit.key -pubout -out audit.pub     # SubjectPublicKeyInfo "PUBLIC KEY"
//
// or `tenantguard controlplane auditkey`. A key's id is the first 16 hex
// digits of the SHA-256 of its 32-byte raw public key, so it needs no
// registry and cannot disagree with the key.
package auditkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrInvalidKey: a key file that is not what this package reads.
var ErrInvalidKey = errors.New("invalid audit key")

// EntryMessagePrefix starts the message an entry's signature is over: the
// prefix, then the entry's hash in lower-case hex (ASCII throughout). The
// prefix keeps these signatures from meaning anything elsewhere.
const EntryMessagePrefix = "tenantguard-audit-entry:"

// EntryMessage is the message signed for an entry with this hash.
func EntryMessage(hash []byte) []byte {
	msg := make([]byte, 0, len(EntryMessagePrefix)+2*len(hash))
	msg = append(msg, EntryMessagePrefix...)
	return hex.AppendEncode(msg, hash)
}

// VerificationKey is an Ed25519 public key with its id.
type VerificationKey struct {
	id  string
	pub ed25519.PublicKey
}

// SigningKey is an Ed25519 private key with its id. Never log or print it.
type SigningKey struct {
	priv ed25519.PrivateKey
	pub  *VerificationKey
}

// KeyID is the id of a raw Ed25519 public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

func newVerificationKey(pub ed25519.PublicKey) *VerificationKey {
	return &VerificationKey{id: KeyID(pub), pub: pub}
}

// Generate makes a new signing key.
func Generate() (*SigningKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &SigningKey{priv: priv, pub: newVerificationKey(pub)}, nil
}

// ID is the key's id, which every entry it signs records.
func (k *SigningKey) ID() string { return k.pub.id }

// String names the key by its id, so that printing or logging it by
// mistake does not reveal it (%v, %+v and %s use it; GoString covers %#v).
func (k *SigningKey) String() string { return "audit signing key " + k.pub.id }

// GoString is String.
func (k *SigningKey) GoString() string { return k.String() }

// Public is the key's verification half.
func (k *SigningKey) Public() *VerificationKey { return k.pub }

// SignEntry signs the entry with this hash.
func (k *SigningKey) SignEntry(hash []byte) []byte { return ed25519.Sign(k.priv, EntryMessage(hash)) }

// MarshalPEM writes the key as a PKCS #8 PEM block. The result is secret.
func (k *SigningKey) MarshalPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		panic(err) // cannot fail for an Ed25519 key
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// ID is the key's id.
func (k *VerificationKey) ID() string { return k.id }

// VerifyEntry reports whether sig is this key's signature of the entry
// with this hash.
func (k *VerificationKey) VerifyEntry(hash, sig []byte) bool {
	return ed25519.Verify(k.pub, EntryMessage(hash), sig)
}

// MarshalPEM writes the key as a SubjectPublicKeyInfo PEM block.
func (k *VerificationKey) MarshalPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		panic(err) // cannot fail for an Ed25519 key
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParseSigningKey reads exactly one PKCS #8 "PRIVATE KEY" PEM block
// holding an Ed25519 key (text outside the block is ignored, as RFC 7468
// allows). Errors wrap ErrInvalidKey and never quote the file.
func ParseSigningKey(data []byte) (*SigningKey, error) {
	block, rest := pem.Decode(data)
	switch {
	case block == nil:
		return nil, fmt.Errorf("%w: no PEM block (want an Ed25519 PRIVATE KEY, PKCS #8)", ErrInvalidKey)
	case block.Type != "PRIVATE KEY":
		return nil, fmt.Errorf("%w: a %q PEM block, want PRIVATE KEY (PKCS #8)", ErrInvalidKey, block.Type)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("%w: more than one PEM block", ErrInvalidKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: not PKCS #8", ErrInvalidKey)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T, want Ed25519", ErrInvalidKey, k)
	}
	return &SigningKey{priv: priv, pub: newVerificationKey(priv.Public().(ed25519.PublicKey))}, nil
}

// ParseVerificationKeys reads one or more "PUBLIC KEY" PEM blocks
// (SubjectPublicKeyInfo) holding Ed25519 keys; text between them is
// ignored, so a key bundle may say which key is which.
func ParseVerificationKeys(data []byte) ([]*VerificationKey, error) {
	var keys []*VerificationKey
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: a %q PEM block, want PUBLIC KEY", ErrInvalidKey, block.Type)
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: PEM block %d: %v", ErrInvalidKey, len(keys)+1, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: PEM block %d is a %T, want Ed25519", ErrInvalidKey, len(keys)+1, k)
		}
		keys = append(keys, newVerificationKey(pub))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no PUBLIC KEY PEM block", ErrInvalidKey)
	}
	return keys, nil
}

// Set is the keys a verifier accepts, by id.
type Set map[string]*VerificationKey

// NewSet collects keys; an id given twice is the same key and kept once.
func NewSet(keys ...*VerificationKey) Set {
	s := Set{}
	for _, k := range keys {
		s[k.id] = k
	}
	return s
}
