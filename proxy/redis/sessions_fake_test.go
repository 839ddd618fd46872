package redis_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

// fakeSessions is a policy.SessionVerifier for this package's tests: tokens
// are "tg1." strings registered with issue; the upstreams stay real.
type fakeSessions struct {
	mu     sync.Mutex
	tokens map[string]fakeToken
	leases map[string][]*fakeLease // by token, in the order opened
	n      int
}

type fakeToken struct {
	tenant    string
	err       error // what Open fails with, if anything
	endAtOpen error // the session ends while Open runs: onEnd is called before it returns
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{tokens: map[string]fakeToken{}, leases: map[string][]*fakeLease{}}
}

// issue registers a token for tenant that Open accepts, or fails with err.
func (f *fakeSessions) issue(tenant string, err error) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	tok := fmt.Sprintf("tg1.%s.%04d.%s", tenant, f.n, strings.Repeat("x", 40))
	f.tokens[tok] = fakeToken{tenant: tenant, err: err}
	return tok
}

// issueEnding issues a token whose session ends (with err) as it is opened.
func (f *fakeSessions) issueEnding(tenant string, err error) string {
	tok := f.issue(tenant, nil)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[tok] = fakeToken{tenant: tenant, endAtOpen: err}
	return tok
}

// issueLen is issue with a token exactly n bytes long.
func (f *fakeSessions) issueLen(tenant string, n int) string {
	tok := f.issue(tenant, nil)
	f.mu.Lock()
	defer f.mu.Unlock()
	long := tok + strings.Repeat("y", n-len(tok))
	f.tokens[long] = f.tokens[tok]
	delete(f.tokens, tok)
	return long
}

func (f *fakeSessions) IsToken(secret string) bool { return strings.HasPrefix(secret, "tg1.") }

func (f *fakeSessions) Open(ctx context.Context, tenant, token string, onEnd func(error)) (policy.SessionLease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tk, ok := f.tokens[token]
	switch {
	case !ok || tk.tenant != tenant:
		return nil, policy.ErrSessionInvalid
	case tk.err != nil:
		return nil, tk.err
	}
	l := &fakeLease{id: fmt.Sprintf("%032x", len(f.leases[token])+1000*f.n), user: "alice", onEnd: onEnd,
		records: make([]fakeRecord, 0, 1024)}
	f.leases[token] = append(f.leases[token], l)
	if tk.endAtOpen != nil {
		onEnd(tk.endAtOpen)
	}
	return l, nil
}

// revoke ends the session of token, as the session service does: no
// new lease opens with it, and every open lease's onEnd is called with err.
func (f *fakeSessions) revoke(token string, err error) {
	f.mu.Lock()
	tk := f.tokens[token]
	tk.err = policy.ErrSessionRevoked
	f.tokens[token] = tk
	leases := append([]*fakeLease(nil), f.leases[token]...)
	f.mu.Unlock()
	for _, l := range leases {
		l.end(err)
	}
}

// lease returns the i-th lease opened with token.
func (f *fakeSessions) lease(t *testing.T, token string, i int) *fakeLease {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.leases[token]) <= i {
		t.Fatalf("lease %d of the token was not opened (%d opened)", i, len(f.leases[token]))
	}
	return f.leases[token][i]
}

// opened counts the leases opened with token.
func (f *fakeSessions) opened(token string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.leases[token])
}

type fakeRecord struct {
	fingerprint uint64
	rule        string
}

// fakeLease records what the data plane reports. end calls onEnd under
// the lease's lock, so, as the contract says, onEnd is never called after
// Close returns (Close waits for it).
type fakeLease struct {
	id, user string

	mu      sync.Mutex
	onEnd   func(error)
	closes  int
	records []fakeRecord
}

func (l *fakeLease) ID() string   { return l.id }
func (l *fakeLease) User() string { return l.user }

func (l *fakeLease) Record(fp uint64, rule string) {
	l.mu.Lock()
	l.records = append(l.records, fakeRecord{fp, rule})
	l.mu.Unlock()
}

func (l *fakeLease) Close() {
	l.mu.Lock()
	l.closes++
	l.mu.Unlock()
}

// end reports the session's end, as the verifier's goroutine would.
func (l *fakeLease) end(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closes == 0 {
		l.onEnd(err)
	}
}

func (l *fakeLease) closeCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closes
}

func (l *fakeLease) recorded() []fakeRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]fakeRecord(nil), l.records...)
}

// waitClosed waits until the lease has been closed, and checks it was
// closed exactly once.
func (l *fakeLease) waitClosed(t *testing.T) {
	t.Helper()
	harness.Eventually(t, 10e9, func() error {
		if n := l.closeCount(); n != 1 {
			return fmt.Errorf("lease closed %d times, want 1", n)
		}
		return nil
	})
}
