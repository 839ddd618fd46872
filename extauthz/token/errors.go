package token

import "errors"

// Errors returned by Verifier.Verify. Every error Verify returns wraps exactly
// one of them (test with errors.Is), so a caller can map it to a response
// (for example 401 for all, with ErrExpired as a hint to refresh) without
// parsing messages. The wrapping text gives detail for logs; it holds only
// token bytes that passed the alphabet checks, never key material.
var (
	// ErrMalformed: the token is not a well-formed version 1 token — wrong
	// prefix or framing, too long, non-canonical base64, truncated or
	// trailing payload bytes, or a field out of its allowed syntax.
	ErrMalformed = errors.New("token: malformed")
	// ErrUnsupportedVersion: the token names a version or algorithm this
	// package does not verify (for example a "tg2." prefix).
	ErrUnsupportedVersion = errors.New("token: unsupported version or algorithm")
	// ErrUnknownKey: the token's key id is not in the Verifier, for example
	// because that key was removed after a rotation.
	ErrUnknownKey = errors.New("token: unknown key id")
	// ErrBadSignature: the Ed25519 or the ML-DSA-65 signature (or both) does
	// not verify: the token was forged or altered.
	ErrBadSignature = errors.New("token: bad signature")
	// ErrExpired: the signature is good but now is at or past the expiry.
	ErrExpired = errors.New("token: expired")
	// ErrNotYetValid: the signature is good but the issued-at time is later
	// than now plus the Verifier's clock skew.
	ErrNotYetValid = errors.New("token: not yet valid")
)

// Errors returned when issuing tokens and handling keys; they signal a bug
// or a bad configuration on the issuing side, not a bad client.
var (
	// ErrInvalidClaims: Sign or NewClaims was given claims that could not
	// be verified (see Claims.Validate).
	ErrInvalidClaims = errors.New("token: invalid claims")
	// ErrInvalidKey: a key id, a PEM key file or a key added to a Verifier
	// was refused.
	ErrInvalidKey = errors.New("token: invalid key")
)
