package token

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Format constants of version 1 tokens.
const (
	// Prefix starts every version 1 token. The version is also the first
	// signed payload byte; the prefix only lets a reader tell versions
	// apart without decoding.
	Prefix = "tg1."

	// MaxTokenLen is the length of the longest version 1 token (every field
	// at its maximum); Verify refuses longer input before decoding it.
	MaxTokenLen = len(Prefix) + maxPayloadB64 + 1 + sigB64

	// domain is prepended to the payload to form the signed message, so a
	// signature made by these keys for anything else is never a token
	// signature.
	domain = "tenantguard-token-v1"

	version1  = 0x01
	algHybrid = 0x01 // Ed25519 and ML-DSA-65, both required

	fixedLen      = 2 + 16 + 8 + 8 // version, algorithm, session id, iat, exp
	minPayloadLen = fixedLen + 3*2 // three length-prefixed fields of 1 byte
	maxPayloadLen = fixedLen + 3 + MaxKeyIDLen + MaxTenantIDLen + MaxUserIDLen

	minPayloadB64 = (minPayloadLen*8 + 5) / 6 // unpadded base64 lengths
	maxPayloadB64 = (maxPayloadLen*8 + 5) / 6
	sigB64        = (sigLen*8 + 5) / 6
)

// b64 is unpadded base64url that refuses non-zero trailing bits. It still
// skips CR and LF, so input is checked against the alphabet first.
var b64 = base64.RawURLEncoding.Strict()

// Sign returns a token for c signed by k, after checking c with
// Claims.Validate. c.KeyID is ignored: the token carries k's id. Both
// signatures are over "tenantguard-token-v1" || payload; the ML-DSA-65 one
// is hedged (randomized), so signing the same claims twice gives two
// different tokens that verify alike.
func (k *SigningKey) Sign(c Claims) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	payload := appendPayload(make([]byte, 0, maxPayloadLen), version1, algHybrid,
		c.SessionID, c.IssuedAt.Unix(), c.ExpiresAt.Unix(), k.id, c.TenantID, c.UserID)
	return k.signPayload(payload)
}

// appendPayload appends the binary payload; lengths must already be checked.
func appendPayload(dst []byte, ver, alg byte, sid SessionID, iat, exp int64, kid, tenant, user string) []byte {
	dst = append(dst, ver, alg)
	dst = append(dst, sid[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(iat))
	dst = binary.BigEndian.AppendUint64(dst, uint64(exp))
	for _, f := range [...]string{kid, tenant, user} {
		dst = append(dst, byte(len(f)))
		dst = append(dst, f...)
	}
	return dst
}

// signPayload signs payload as it is and frames the token.
func (k *SigningKey) signPayload(payload []byte) (string, error) {
	msg := append([]byte(domain), payload...)
	sig := make([]byte, sigLen)
	copy(sig, ed25519.Sign(k.ed, msg))
	if err := mldsa65.SignTo(k.ml, msg, nil, true, sig[edSigLen:]); err != nil {
		return "", fmt.Errorf("token: ML-DSA-65 signing: %w", err)
	}
	var sb strings.Builder
	sb.Grow(len(Prefix) + b64.EncodedLen(len(payload)) + 1 + sigB64)
	sb.WriteString(Prefix)
	sb.WriteString(b64.EncodeToString(payload))
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(sig))
	return sb.String(), nil
}
