package extauthzsvc

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tenantguard/tenantguard/extauthz/authz"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// TestApplyPolicySessions pushes sessions sections: strip_authorization,
// ttl and max_age take effect, unset fields and a missing section mean
// the configuration's values, and invalid lifetimes are NACKed with
// nothing changed (not even the tenants).
func TestApplyPolicySessions(t *testing.T) {
	store := session.NewStore(nil, nil, session.Config{TTL: 10 * time.Minute, MaxAge: time.Hour})
	s := &Service{
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		store: store,
		authz: authz.New(nil, authz.Options{StripAuthorization: true}, nil, nil),
		local: sessionSettings{ttl: 10 * time.Minute, maxAge: time.Hour, strip: true},
	}
	s.tenants.Store(&map[string]bool{})
	no := false
	for _, tc := range []struct {
		name        string
		tenant      string
		sessions    *policypb.SessionSettings
		wantErr     string
		ttl, maxAge time.Duration
		strip       bool
	}{
		{"no section", "acme", nil, "", 10 * time.Minute, time.Hour, true},
		{"all pushed", "acme", &policypb.SessionSettings{Ttl: durationpb.New(time.Minute), MaxAge: durationpb.New(2 * time.Hour), StripAuthorization: &no}, "", time.Minute, 2 * time.Hour, false},
		{"unset fields are local", "acme", &policypb.SessionSettings{Ttl: durationpb.New(5 * time.Minute)}, "", 5 * time.Minute, time.Hour, true},
		{"max_age under ttl refused", "globex", &policypb.SessionSettings{Ttl: durationpb.New(time.Hour), MaxAge: durationpb.New(time.Minute), StripAuthorization: &no}, "max_age", 5 * time.Minute, time.Hour, true},
		{"ttl under a second refused", "globex", &policypb.SessionSettings{Ttl: durationpb.New(time.Millisecond)}, "ttl", 5 * time.Minute, time.Hour, true},
		{"invalid duration refused", "globex", &policypb.SessionSettings{Ttl: &durationpb.Duration{Seconds: 1, Nanos: -1}}, "sessions.ttl", 5 * time.Minute, time.Hour, true},
		{"section removed", "acme", nil, "", 10 * time.Minute, time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &policypb.Policy{Tenants: []*policypb.Tenant{{Id: tc.tenant}}, Sessions: tc.sessions}
			err := s.applyPolicy(tc.name, p)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("applyPolicy: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("applyPolicy: %v, want an error containing %q", err, tc.wantErr)
			}
			if ttl, maxAge := store.Lifetimes(); ttl != tc.ttl || maxAge != tc.maxAge {
				t.Errorf("lifetimes %v, %v; want %v, %v", ttl, maxAge, tc.ttl, tc.maxAge)
			}
			if got := s.authz.StripsAuthorization(); got != tc.strip {
				t.Errorf("strip authorization %v, want %v", got, tc.strip)
			}
			if tc.wantErr != "" && s.tenantAllowed(tc.tenant) {
				t.Errorf("a NACKed policy's tenant %s is allowed", tc.tenant)
			}
		})
	}
}
