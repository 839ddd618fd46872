// Package sessionfake is a policy.SessionVerifier for the data planes'
// package tests: tokens are "tg1." strings registered with Issue, sessions
// end when a test says so. The upstream servers in those tests stay real;
// the real verifier (extauthz/session) is tested against real Redis.
package sessionfake

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

// Sessions is the fake verifier: tokens are "tg1." strings registered
// with Issue.
type Sessions struct {
	mu     sync.Mutex
	tokens map[string]token
	leases map[string][]*Lease // by token, in the order opened
	n      int
}

// token is one issued token.
type token struct {
	tenant    string
	err       error // what Open fails with, if anything
	endAtOpen error // the session ends while Open runs: onEnd is called before it returns
}

// New returns a verifier with no tokens.
func New() *Sessions {
	return &Sessions{tokens: map[string]token{}, leases: map[string][]*Lease{}}
}

// Issue registers a token for tenant that Open accepts, or fails with err.
func (f *Sessions) Issue(tenant string, err error) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	tok := fmt.Sprintf("tg1.%s.%04d.%s", tenant, f.n, strings.Repeat("x", 40))
	f.tokens[tok] = token{tenant: tenant, err: err}
	return tok
}

// IssueEnding issues a token whose session ends (with err) as it is opened.
func (f *Sessions) IssueEnding(tenant string, err error) string {
	tok := f.Issue(tenant, nil)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[tok] = token{tenant: tenant, endAtOpen: err}
	return tok
}

// IssueLen is Issue with a token exactly n bytes long.
func (f *Sessions) IssueLen(tenant string, n int) string {
	tok := f.Issue(tenant, nil)
	f.mu.Lock()
	defer f.mu.Unlock()
	long := tok + strings.Repeat("y", n-len(tok))
	f.tokens[long] = f.tokens[tok]
	delete(f.tokens, tok)
	return long
}

// IsToken reports whether secret has the fake tokens' prefix.
func (f *Sessions) IsToken(secret string) bool { return strings.HasPrefix(secret, "tg1.") }

// Open opens a lease for a token issued for tenant.
func (f *Sessions) Open(ctx context.Context, tenant, token string, onEnd func(error)) (policy.SessionLease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tk, ok := f.tokens[token]
	switch {
	case !ok || tk.tenant != tenant:
		return nil, policy.ErrSessionInvalid
	case tk.err != nil:
		return nil, tk.err
	}
	l := &Lease{id: fmt.Sprintf("%032x", len(f.leases[token])+1000*f.n), user: "alice", onEnd: onEnd,
		records: make([]Record, 0, 1024)}
	f.leases[token] = append(f.leases[token], l)
	if tk.endAtOpen != nil {
		onEnd(tk.endAtOpen)
	}
	return l, nil
}

// Revoke ends the session of token, as the session service does: no
// new lease opens with it, and every open lease's onEnd is called with err.
func (f *Sessions) Revoke(token string, err error) {
	f.mu.Lock()
	tk := f.tokens[token]
	tk.err = policy.ErrSessionRevoked
	f.tokens[token] = tk
	leases := append([]*Lease(nil), f.leases[token]...)
	f.mu.Unlock()
	for _, l := range leases {
		l.End(err)
	}
}

// Lease returns the i-th lease opened with token.
func (f *Sessions) Lease(t *testing.T, token string, i int) *Lease {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.leases[token]) <= i {
		t.Fatalf("lease %d of the token was not opened (%d opened)", i, len(f.leases[token]))
	}
	return f.leases[token][i]
}

// Opened counts the leases opened with token.
func (f *Sessions) Opened(token string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.leases[token])
}

// Record is one Record call on a lease.
type Record struct {
	Fingerprint uint64
	Rule        string
}

// Lease records what the data plane reports. end calls onEnd under
// the lease's lock, so, as the contract says, onEnd is never called after
// Close returns (Close waits for it).
type Lease struct {
	id, user string

	mu      sync.Mutex
	onEnd   func(error)
	closes  int
	records []Record
}

// ID is the lease's session id.
func (l *Lease) ID() string { return l.id }

// User is the session's user.
func (l *Lease) User() string { return l.user }

// Record counts one request, as the data plane reports it.
func (l *Lease) Record(fp uint64, rule string) {
	l.mu.Lock()
	l.records = append(l.records, Record{fp, rule})
	l.mu.Unlock()
}

// Close ends the watch.
func (l *Lease) Close() {
	l.mu.Lock()
	l.closes++
	l.mu.Unlock()
}

// End reports the session's end, as the verifier's goroutine would.
func (l *Lease) End(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closes == 0 {
		l.onEnd(err)
	}
}

// CloseCount is how many times the data plane closed the lease.
func (l *Lease) CloseCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closes
}

// Recorded returns the lease's Record calls so far.
func (l *Lease) Recorded() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Record(nil), l.records...)
}

// WaitClosed waits until the lease has been closed, and checks it was
// closed exactly once.
func (l *Lease) WaitClosed(t *testing.T) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, func() error {
		if n := l.CloseCount(); n != 1 {
			return fmt.Errorf("lease closed %d times, want 1", n)
		}
		return nil
	})
}
