package authz_test

import (
	"slices"
	"testing"

	"github.com/tenantguard/tenantguard/extauthz/authz"
	"github.com/tenantguard/tenantguard/extauthz/session"
)

// TestSetStripAuthorization toggles header stripping on a running server,
// as a pushed policy's sessions.strip_authorization does: the next check
// follows the new setting.
func TestSetStripAuthorization(t *testing.T) {
	f := newFixture(t, session.Config{}, authz.Options{StripAuthorization: true})
	_, tok := f.create(t, "acme", "alice")
	for _, tc := range []struct {
		name  string
		strip bool
	}{
		{"off", false},
		{"on again", true},
		{"off again", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.srv.SetStripAuthorization(tc.strip)
			if got := f.srv.StripsAuthorization(); got != tc.strip {
				t.Fatalf("StripsAuthorization() = %v, want %v", got, tc.strip)
			}
			resp := f.check(t, bearer(tok))
			okHeaders(t, resp)
			rm := resp.GetOkResponse().GetHeadersToRemove()
			if stripped := slices.Contains(rm, "authorization"); stripped != tc.strip {
				t.Errorf("headers to remove %q: authorization stripped = %v, want %v", rm, stripped, tc.strip)
			}
		})
	}
}
