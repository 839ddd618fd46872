package token

import (
	"bytes"
	"encoding/pem"
	"fmt"
)

// Key files are PEM (RFC 7468 framing) with two headers, for example
//
//	-----BEGIN TENANTGUARD TOKEN VERIFICATION KEY-----
//	Algorithm: tg1-ed25519-mldsa65
//	Key-Id: 2026-01
//
//	<base64 of the 32-byte Ed25519 public key || 1952-byte ML-DSA-65 public key>
//	-----END TENANTGUARD TOKEN VERIFICATION KEY-----
//
// A signing key file has type TENANTGUARD TOKEN SIGNING KEY and holds the
// 32-byte Ed25519 seed || the 32-byte ML-DSA-65 seed (FIPS 204 ξ). Parsing
// is strict: one block of the expected type (or several for
// ParseVerificationKeys), exactly these two headers, the exact length, and
// nothing but whitespace around the blocks.
const (
	// Algorithm names the token version and signature pair in key files.
	Algorithm = "tg1-ed25519-mldsa65"

	pemSigningType      = "TENANTGUARD TOKEN SIGNING KEY"
	pemVerificationType = "TENANTGUARD TOKEN VERIFICATION KEY"
	hdrAlgorithm        = "Algorithm"
	hdrKeyID            = "Key-Id"
)

// MarshalPEM returns the signing key as a PEM block. The result is secret:
// store it like any private key (mode 0600, a secret manager).
func (k *SigningKey) MarshalPEM() []byte {
	return encodePEM(pemSigningType, k.id, k.seed[:])
}

// MarshalPEM returns the verification key as a PEM block. Several blocks
// concatenated are a key bundle for ParseVerificationKeys.
func (k *VerificationKey) MarshalPEM() []byte {
	return encodePEM(pemVerificationType, k.id, k.raw[:])
}

// ParseSigningKey parses exactly one PEM block written by
// SigningKey.MarshalPEM. Errors wrap ErrInvalidKey.
func ParseSigningKey(data []byte) (*SigningKey, error) {
	id, body, rest, err := decodePEM(data, pemSigningType, seedLen)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the PEM block", ErrInvalidKey)
	}
	return newSigningKey(id, [seedLen]byte(body))
}

// ParseVerificationKey parses exactly one PEM block written by
// VerificationKey.MarshalPEM. Errors wrap ErrInvalidKey.
func ParseVerificationKey(data []byte) (*VerificationKey, error) {
	keys, err := ParseVerificationKeys(data)
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("%w: %d PEM blocks, want 1", ErrInvalidKey, len(keys))
	}
	return keys[0], nil
}

// ParseVerificationKeys parses one or more concatenated verification key
// blocks, the form a verifier's key bundle takes during a rotation. Key ids
// must be distinct. Errors wrap ErrInvalidKey.
func ParseVerificationKeys(data []byte) ([]*VerificationKey, error) {
	var keys []*VerificationKey
	seen := map[string]bool{}
	for rest := data; len(bytes.TrimSpace(rest)) != 0 || len(keys) == 0; {
		id, body, r, err := decodePEM(rest, pemVerificationType, pubLen)
		if err != nil {
			return nil, err
		}
		if seen[id] {
			return nil, fmt.Errorf("%w: key id %q appears twice", ErrInvalidKey, id)
		}
		seen[id] = true
		keys = append(keys, newVerificationKey(id, [pubLen]byte(body)))
		rest = r
	}
	return keys, nil
}

func encodePEM(typ, id string, body []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{
		Type:    typ,
		Headers: map[string]string{hdrAlgorithm: Algorithm, hdrKeyID: id},
		Bytes:   body,
	})
}

// decodePEM decodes the first block of data, which may be preceded only by
// whitespace (pem.Decode itself would skip any text, or a broken block), and
// checks its type, headers and body length.
func decodePEM(data []byte, typ string, bodyLen int) (id string, body, rest []byte, err error) {
	if !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("-----BEGIN ")) {
		return "", nil, nil, fmt.Errorf("%w: want a %s PEM block", ErrInvalidKey, typ)
	}
	b, rest := pem.Decode(data)
	switch {
	case b == nil || bytes.Count(data[:len(data)-len(rest)], []byte("-----BEGIN ")) != 1:
		// pem.Decode skips a broken block to find a later one; refuse that.
		return "", nil, nil, fmt.Errorf("%w: bad PEM block", ErrInvalidKey)
	case b.Type != typ:
		return "", nil, nil, fmt.Errorf("%w: PEM type %q, want %q", ErrInvalidKey, b.Type, typ)
	case len(b.Headers) != 2 || b.Headers[hdrAlgorithm] != Algorithm:
		return "", nil, nil, fmt.Errorf("%w: want exactly the headers %s: %s and %s", ErrInvalidKey, hdrAlgorithm, Algorithm, hdrKeyID)
	case !validKeyID(b.Headers[hdrKeyID]):
		return "", nil, nil, fmt.Errorf("%w: bad %s %q", ErrInvalidKey, hdrKeyID, b.Headers[hdrKeyID])
	case len(b.Bytes) != bodyLen:
		return "", nil, nil, fmt.Errorf("%w: %d key bytes, want %d", ErrInvalidKey, len(b.Bytes), bodyLen)
	}
	return b.Headers[hdrKeyID], b.Bytes, rest, nil
}
