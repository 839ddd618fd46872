// Package bearer checks "Authorization: Bearer <token>" credentials against
// a configured token, for the admin APIs and the xDS server.
package bearer

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"
)

// MinLen is the shortest token accepted in configuration.
const MinLen = 16

// Token is the SHA-256 of a configured token. Comparing digests in constant
// time leaks neither the token's length nor its content through timing.
type Token [sha256.Size]byte

// New returns the Token for tok, refusing one shorter than MinLen.
func New(tok string) (Token, error) {
	if len(tok) < MinLen {
		return Token{}, errors.New("token must have at least 16 characters")
	}
	return sha256.Sum256([]byte(tok)), nil
}

// Matches reports whether an Authorization header value is "Bearer <the
// token>" (the scheme is case-insensitive, RFC 6750 §2.1).
func (t Token) Matches(authorization string) bool {
	scheme, tok, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], t[:]) == 1
}
