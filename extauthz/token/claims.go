package token

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/policy"
)

// Field limits of version 1 tokens. They are part of the format: a verifier
// refuses a token outside them even if its signatures are good.
const (
	// MaxKeyIDLen bounds a key id; key ids are [A-Za-z0-9][A-Za-z0-9._-]*.
	MaxKeyIDLen = 64
	// MaxTenantIDLen bounds a tenant id, which must match
	// ^[a-z0-9][a-z0-9_-]{0,62}$ so it is safe as a PostgreSQL identifier
	// part, a Redis key prefix and a metrics label.
	MaxTenantIDLen = policy.MaxTenantIDLen
	// MaxUserIDLen bounds a user id: 1..255 bytes of printable ASCII
	// without space, like an OpenID Connect "sub", so it is safe in logs
	// and headers as is.
	MaxUserIDLen = 255
)

// Unix-second bounds for issued-at and expires-at: times before 1970 or
// after year 9999 are refused, so every value converts to and from
// time.Time without overflow.
const (
	minUnix = 1
	maxUnix = 253402300799 // 9999-12-31T23:59:59Z
)

// SessionID is a random 128-bit session identifier. It names the session a
// token belongs to, so a revocation list can refuse every token of one
// session; it is not a secret.
type SessionID [16]byte

// NewSessionID returns a fresh random session id from crypto/rand.
func NewSessionID() SessionID {
	var s SessionID
	_, _ = rand.Read(s[:]) // never fails since Go 1.24
	return s
}

// IsZero reports whether s is the all-zero id, which tokens never carry.
func (s SessionID) IsZero() bool { return s == SessionID{} }

// String returns s as 32 lowercase hex digits, the form for logs and
// revocation-list keys.
func (s SessionID) String() string { return hex.EncodeToString(s[:]) }

// Claims is what a token asserts: one session of one user in one tenant,
// valid from IssuedAt until (not including) ExpiresAt. Times carry whole
// seconds; Sign drops any fraction.
type Claims struct {
	// SessionID identifies the session; it must not be zero.
	SessionID SessionID
	// TenantID is the tenant the session is bound to.
	TenantID string
	// UserID is the user within the tenant.
	UserID string
	// IssuedAt is when the token was issued.
	IssuedAt time.Time
	// ExpiresAt is the first instant the token is no longer valid.
	ExpiresAt time.Time
	// KeyID is the id of the key that signed the token. Verify sets it;
	// Sign ignores it and writes the signing key's id.
	KeyID string
}

// NewClaims returns claims for a new session: a fresh random session id,
// issued at now (to the second) and expiring ttl later. ttl must be at
// least one second.
func NewClaims(tenantID, userID string, now time.Time, ttl time.Duration) (Claims, error) {
	if ttl < time.Second {
		return Claims{}, fmt.Errorf("%w: ttl %v is shorter than one second", ErrInvalidClaims, ttl)
	}
	iat := now.Truncate(time.Second)
	c := Claims{
		SessionID: NewSessionID(),
		TenantID:  tenantID,
		UserID:    userID,
		IssuedAt:  iat,
		ExpiresAt: iat.Add(ttl).Truncate(time.Second),
	}
	if err := c.Validate(); err != nil {
		return Claims{}, err
	}
	return c, nil
}

// Validate reports, as an error wrapping ErrInvalidClaims, why c could not
// be signed: a zero session id, a tenant, user or time outside the limits of
// the format, or an expiry not after the issue time. KeyID is not checked.
func (c Claims) Validate() error {
	if msg := checkFields(c.SessionID, c.IssuedAt.Unix(), c.ExpiresAt.Unix(), c.TenantID, c.UserID); msg != "" {
		return fmt.Errorf("%w: %s", ErrInvalidClaims, msg)
	}
	return nil
}

// checkFields returns why the fields are invalid, or "" if they are valid.
// Sign and Verify both use it, so a token one accepts the other would too.
func checkFields(sid SessionID, iat, exp int64, tenant, user string) string {
	switch {
	case sid.IsZero():
		return "zero session id"
	case !policy.ValidTenantID(tenant):
		return fmt.Sprintf("tenant id %q does not match ^[a-z0-9][a-z0-9_-]{0,62}$", tenant)
	case !validUserID(user):
		return "user id is empty, longer than 255 bytes, or not printable ASCII without space"
	case iat < minUnix || iat > maxUnix:
		return fmt.Sprintf("issued-at %d out of range", iat)
	case exp < minUnix || exp > maxUnix:
		return fmt.Sprintf("expires-at %d out of range", exp)
	case exp <= iat:
		return fmt.Sprintf("expires-at %d is not after issued-at %d", exp, iat)
	}
	return ""
}

// validUserID: 1..255 bytes in 0x21..0x7e.
func validUserID(id string) bool {
	if len(id) == 0 || len(id) > MaxUserIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// validKeyID: 1..64 bytes, [A-Za-z0-9][A-Za-z0-9._-]*.
func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > MaxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}
