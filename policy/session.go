package policy

import (
	"context"
	"errors"
)

// Session tokens as data-plane credentials.
//
// A client may present a session token issued by the session service
// (extauthz) instead of a static password. The data planes see tokens only
// through SessionVerifier, so proxy/ does not depend on extauthz/; the
// sidecar command wires an implementation in.

// SessionEndMode says when a data-plane connection authenticated with a
// session token ends once its session is revoked or expires.
type SessionEndMode string

const (
	// SessionEndImmediate closes the connection at once, aborting any
	// transaction in progress.
	SessionEndImmediate SessionEndMode = "immediate"
	// SessionEndBoundary lets a transaction in progress finish (Postgres:
	// ReadyForQuery idle; Redis: no reply owed and no MULTI open), then closes
	// the connection; nothing new starts in the meantime.
	SessionEndBoundary SessionEndMode = "boundary"
)

// Errors a SessionVerifier returns. Data planes turn all of them into the
// same authentication failure a wrong password gets; the distinction is for
// logs and metrics.
var (
	ErrSessionInvalid     = errors.New("session token is invalid")                 // malformed, bad signature, unknown key, wrong tenant
	ErrSessionExpired     = errors.New("session token has expired")                // or is not yet valid
	ErrSessionRevoked     = errors.New("session has been revoked")                 // or is unknown to the store
	ErrSessionUnavailable = errors.New("session store is unreachable")             // fail closed
	ErrSessionEnded       = errors.New("session ended: revoked or expired")        // reported to a lease's onEnd
	ErrSessionStoreLost   = errors.New("session ended: session store unreachable") // grace ran out
)

// SessionVerifier checks session tokens that clients present as passwords.
// Implementations are safe for concurrent use.
type SessionVerifier interface {
	// IsToken reports whether secret has the form of a session token. A
	// secret that is not is checked against the tenant's static
	// credentials instead; one that is is never checked as a password.
	IsToken(secret string) bool

	// Open verifies token as a credential for tenant: format, signature,
	// key id, issue and expiry times, that the token was issued for this
	// very tenant, and that the session store has not revoked it. On
	// success the returned lease watches the session until Close: when the
	// session is revoked or expires, onEnd is called once, from a goroutine
	// the verifier owns, with the reason; it must not block. onEnd is never
	// called after Close returns.
	Open(ctx context.Context, tenant, token string, onEnd func(error)) (SessionLease, error)
}

// SessionLease is one data-plane connection's hold on a session.
type SessionLease interface {
	// ID is the session id (32 hex digits).
	ID() string
	// User is the user the session was issued to.
	User() string
	// Record counts one request of the connection for the session's
	// analytics: fingerprint identifies the statement or command shape (for
	// distinct-statement counts; 0 if none), refusedRule names the rule that
	// refused it ("" if it was allowed). It never blocks or does I/O.
	Record(fingerprint uint64, refusedRule string)
	// Close ends the watch; the connection is gone.
	Close()
}
