package pg

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/internal/connbuf"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
	wire "github.com/tenantguard/tenantguard/wire/pg"
	"github.com/tenantguard/tenantguard/wire/scram"
)

// Password authentication with session tokens.
//
// SCRAM proves knowledge of a stored secret without showing it to the
// server, so a session token, which the session service must see to verify,
// can only come as a cleartext PasswordMessage. The listener asks for one
// only where it cannot be sniffed (TLS, loopback, unix socket; see
// TokenAuth); everywhere else it keeps SCRAM and static credentials.

// authFailure is an authentication that failed: the client gets the same
// 28P01 whatever the reason, which only logs and metrics see.
type authFailure struct {
	reason string // metrics label: password, token_invalid, token_expired, token_revoked, store_unavailable
	cause  error  // for the log; never holds the secret
	reply  *wire.Error
}

func (e *authFailure) Error() string { return e.reply.Error() + ": " + e.reason }

func (e *authFailure) Unwrap() error { return e.cause }

func passwordFailed(user, reason string, cause error) *authFailure {
	return &authFailure{reason: reason, cause: cause,
		reply: wire.Fatalf(wire.CodeInvalidPassword, "password authentication failed for user %q", user)}
}

// asksCleartext reports whether a client connection is asked for its
// password in cleartext, so it may present a session token.
func (srv *Server) asksCleartext(remote net.Addr, isTLS bool) bool {
	if srv.cfg.Sessions == nil {
		return false
	}
	switch srv.cfg.TokenAuth {
	case TokenAuthTLS:
		return isTLS
	case TokenAuthLocalOrTLS:
		return isTLS || isLocal(remote)
	}
	return false
}

// isLocal reports whether a client address is on this host: a loopback
// address or a unix socket.
func isLocal(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// login is what authentication established.
type login struct {
	tenant *policy.Tenant
	lease  policy.SessionLease // for a session token (its onEnd is the link's)
	// credential is the StoredKey of the static credential used; nil for
	// a session token. A policy without it ends the connection.
	credential []byte
}

// authenticate checks user's credentials, with SCRAM or, when cleartext is
// set, a cleartext password that may be a session token.
func (srv *Server) authenticate(ctx context.Context, rd *wire.Reader, bw *connbuf.Writer, user string, cleartext bool, link *clientend.Link) (login, error) {
	if !cleartext {
		t, cred, err := srv.scram(rd, bw, user)
		return login{tenant: t, credential: cred}, err
	}
	b, _ := (&pgproto3.AuthenticationCleartextPassword{}).Encode(nil)
	if _, err := bw.Write(b); err != nil {
		return login{}, err
	}
	if err := bw.Flush(); err != nil {
		return login{}, err
	}
	typ, raw, err := rd.Next()
	if err != nil {
		return login{}, fmt.Errorf("read PasswordMessage: %w", err)
	}
	if typ != 'p' {
		return login{}, wire.Fatalf(wire.CodeProtocolViolation, "expected password response, got message type %q", typ)
	}
	var pm pgproto3.PasswordMessage
	if err := pm.Decode(raw[5:]); err != nil {
		return login{}, wire.Fatalf(wire.CodeProtocolViolation, "malformed PasswordMessage: %v", err)
	}
	snap := srv.policy.Load()
	t, known := snap.Tenant(user)
	if srv.cfg.Sessions.IsToken(pm.Password) {
		// Checked even for a tenant the policy does not know, so the time
		// taken does not tell which tenants exist.
		octx, cancel := context.WithTimeout(ctx, srv.cfg.StartupTimeout)
		lease, err := srv.cfg.Sessions.Open(octx, user, pm.Password, link.OnEnd)
		cancel()
		if err != nil {
			return login{}, passwordFailed(user, clientend.TokenFailureReason(err), err)
		}
		if !known {
			link.Detach()
			lease.Close()
			return login{}, passwordFailed(user, "token_invalid", errors.New("the policy has no such tenant"))
		}
		return login{tenant: t, lease: lease}, nil
	}
	cred := srv.secrets.check(snap, t, known, user, pm.Password, srv.mockSecret[:])
	if cred == nil {
		return login{}, passwordFailed(user, "password", nil)
	}
	return login{tenant: t, credential: cred}, nil
}

// secretCache remembers, per tenant, the SHA-256 of the last static secret
// that verified, so reconnecting clients do not pay PBKDF2 each time. It
// is emptied whenever the policy changes, so a removed secret stops working.
type secretCache struct {
	mu   sync.Mutex
	snap *policy.Snapshot
	ok   map[string]verifiedSecret
}

// verifiedSecret is the last static secret that verified for a user, and
// the StoredKey of the credential it matched.
type verifiedSecret struct {
	sum       [32]byte
	storedKey []byte
}

// check verifies pass against the tenant's static verifiers and returns
// the StoredKey of the one it matched, or nil. An unknown user costs the
// same PBKDF2 as a wrong password.
func (c *secretCache) check(snap *policy.Snapshot, t *policy.Tenant, known bool, user, pass string, mockSecret []byte) []byte {
	sum := sha256.Sum256([]byte(user + "\x00" + pass))
	c.mu.Lock()
	if c.snap != snap {
		c.snap, c.ok = snap, map[string]verifiedSecret{}
	}
	have, cached := c.ok[user]
	c.mu.Unlock()
	if cached && subtle.ConstantTimeCompare(have.sum[:], sum[:]) == 1 {
		return have.storedKey
	}
	if !known || len(t.Verifiers()) == 0 {
		scram.MockVerifier(user, mockSecret).Verify(pass)
		return nil
	}
	for _, v := range t.Verifiers() {
		if v.Verify(pass) {
			c.mu.Lock()
			if c.snap == snap {
				c.ok[user] = verifiedSecret{sum: sum, storedKey: v.StoredKey}
			}
			c.mu.Unlock()
			return v.StoredKey
		}
	}
	return nil
}
