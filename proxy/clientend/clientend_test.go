package clientend

import (
	"errors"
	"testing"

	"github.com/tenantguard/tenantguard/policy"
)

func TestLinkEndBeforeAttachIsApplied(t *testing.T) {
	var l Link
	l.OnEnd(policy.ErrSessionRevoked)
	l.OnEnd(policy.ErrSessionExpired) // the first end is the one kept
	var got []error
	l.Attach(func(err error) { got = append(got, err) })
	l.OnEnd(policy.ErrSessionExpired) // already fired
	if len(got) != 1 || !errors.Is(got[0], policy.ErrSessionRevoked) {
		t.Fatalf("ends delivered = %v, want one ErrSessionRevoked", got)
	}
}

func TestLinkDetachedDropsEnds(t *testing.T) {
	var l Link
	calls := 0
	l.Attach(func(error) { calls++ })
	l.Detach()
	l.OnEnd(policy.ErrSessionRevoked)
	if calls != 0 {
		t.Fatalf("a detached link delivered %d ends", calls)
	}

	var early Link
	early.OnEnd(policy.ErrSessionRevoked)
	early.Detach()
	early.Attach(func(error) { calls++ })
	if calls != 0 {
		t.Fatal("an end reported before Detach was applied after it")
	}
}

func TestModeSetAndGet(t *testing.T) {
	m := NewMode(policy.SessionEndBoundary)
	if m.Get() != policy.SessionEndBoundary {
		t.Fatalf("Get = %q before Set", m.Get())
	}
	if err := m.Set(policy.SessionEndImmediate); err != nil || m.Get() != policy.SessionEndImmediate {
		t.Fatalf("Set(immediate) = %v, Get = %q", err, m.Get())
	}
	if err := m.Set("sometime"); err == nil || m.Get() != policy.SessionEndImmediate {
		t.Fatalf("Set(bogus) = %v, Get = %q", err, m.Get())
	}
}

func TestTokenFailureReason(t *testing.T) {
	for err, want := range map[error]string{
		policy.ErrSessionExpired:     "token_expired",
		policy.ErrSessionRevoked:     "token_revoked",
		policy.ErrSessionUnavailable: "store_unavailable",
		errors.New("bad signature"):  "token_invalid",
	} {
		if got := TokenFailureReason(err); got != want {
			t.Errorf("TokenFailureReason(%v) = %q, want %q", err, got, want)
		}
	}
}
