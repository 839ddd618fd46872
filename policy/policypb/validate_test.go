package policypb_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(p *policypb.Policy)
		field  string // "" = valid
		msg    string // prefix of the FieldError's Msg
	}{
		{"valid", func(*policypb.Policy) {}, "", ""},
		{"no tenants", func(p *policypb.Policy) { p.Tenants = nil }, "", ""},
		{"suspended tenant", func(p *policypb.Policy) { p.Tenants[0].Suspended = true }, "", ""},
		{"allow absent", func(p *policypb.Policy) { p.Tenants[0].Allow = nil }, "", ""},
		{"empty sections", func(p *policypb.Policy) {
			p.Redis, p.Sessions = &policypb.RedisRules{}, &policypb.SessionSettings{}
		}, "", ""},
		{"max_age without ttl", func(p *policypb.Policy) { p.Sessions.Ttl = nil; p.Sessions.MaxAge = durationpb.New(time.Second) }, "", ""},

		// Rules only the message has.
		{"resource name", func(p *policypb.Policy) { p.Name = "default" }, "", ""},
		{"resource name with dots", func(p *policypb.Policy) { p.Name = "eu-west.v2_a" }, "", ""},
		{"resource name upper case", func(p *policypb.Policy) { p.Name = "Default" }, "name", `"Default" is not a valid resource name`},
		{"resource name with slash", func(p *policypb.Policy) { p.Name = "a/b" }, "name", `"a/b" is not a valid resource name`},
		{"resource name too long", func(p *policypb.Policy) { p.Name = strings.Repeat("a", 64) }, "name", `"` + strings.Repeat("a", 64) + `" is not a valid resource name`},
		{"plaintext credential", func(p *policypb.Policy) { p.Tenants[1].Credentials[0] = "globex-secret" },
			"tenants[1].credentials[0]", "not a SCRAM-SHA-256 verifier"},
		{"malformed verifier", func(p *policypb.Policy) { p.Tenants[0].Credentials[1] = "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB" },
			"tenants[0].credentials[1]", "not a SCRAM-SHA-256 verifier: verifier: bad StoredKey"},
		{"md5 hash", func(p *policypb.Policy) { p.Tenants[0].Credentials[0] = "md5" + strings.Repeat("0", 32) },
			"tenants[0].credentials[0]", "not a SCRAM-SHA-256 verifier"},
		{"nil tenant", func(p *policypb.Policy) { p.Tenants[1] = nil }, "tenants[1]", "missing"},
		{"nil table", func(p *policypb.Policy) { p.Tables[0] = nil }, "tables[0]", "missing"},
		{"negative statement_timeout", func(p *policypb.Policy) { p.Tenants[1].Limits.StatementTimeout = durationpb.New(-time.Second) },
			"tenants[1].limits.statement_timeout", "must not be negative"},
		{"invalid statement_timeout", func(p *policypb.Policy) {
			p.Tenants[0].Limits.StatementTimeout = &durationpb.Duration{Seconds: 1, Nanos: -1}
		}, "tenants[0].limits.statement_timeout", "not a valid duration"},
		{"statement_timeout beyond time.Duration", func(p *policypb.Policy) {
			p.Tenants[0].Limits.StatementTimeout = &durationpb.Duration{Seconds: 300 * 365 * 86400}
		}, "tenants[0].limits.statement_timeout", "too long"},
		{"namespace out of range", func(p *policypb.Policy) { p.Redis.Namespace = 3 }, "redis.namespace", "3 is not a namespace mode"},
		{"namespace negative", func(p *policypb.Policy) { p.Redis.Namespace = -1 }, "redis.namespace", "-1 is not a namespace mode"},
		{"emulate unknown", func(p *policypb.Policy) { p.Redis.Emulate = append(p.Redis.Emulate, "keys") },
			"redis.emulate[2]", `"keys" cannot be emulated`},
		{"emulate client-setname", func(p *policypb.Policy) { p.Redis.Emulate = []string{"client-setname"} },
			"redis.emulate[0]", `"client-setname" cannot be emulated`},
		{"emulate twice", func(p *policypb.Policy) { p.Redis.Emulate = []string{"dbsize", "flushall", "dbsize"} },
			"redis.emulate[2]", `"dbsize" is listed twice`},
		{"negative ttl", func(p *policypb.Policy) { p.Sessions.Ttl = durationpb.New(-time.Minute) }, "sessions.ttl", "must not be negative"},
		{"negative max_age", func(p *policypb.Policy) { p.Sessions.MaxAge = durationpb.New(-time.Minute) }, "sessions.max_age", "must not be negative"},
		{"negative grace", func(p *policypb.Policy) { p.Sessions.Grace = &durationpb.Duration{Nanos: -1} }, "sessions.grace", "must not be negative"},
		{"ttl under a second", func(p *policypb.Policy) { p.Sessions.Ttl = durationpb.New(500 * time.Millisecond) }, "sessions.ttl", "must be at least 1s"},
		{"max_age below ttl", func(p *policypb.Policy) { p.Sessions.MaxAge = durationpb.New(10 * time.Minute) },
			"sessions.max_age", "must not be shorter than sessions.ttl"},
		{"end_mode out of range", func(p *policypb.Policy) { p.Sessions.EndMode = 9 }, "sessions.end_mode", "9 is not an end mode"},

		// policy.Compile's rules, with the message's field paths.
		{"bad tenant id", func(p *policypb.Policy) { p.Tenants[1].Id = "Globex" }, "tenants[1].id", `"Globex" is not a valid tenant id`},
		{"duplicate tenant", func(p *policypb.Policy) { p.Tenants[1].Id = "acme" }, "tenants[1].id", `tenant "acme" is defined twice`},
		{"duplicate of a suspended tenant", func(p *policypb.Policy) { p.Tenants[0].Suspended = true; p.Tenants[1].Id = "acme" },
			"tenants[1].id", `tenant "acme" is defined twice`},
		{"no credentials", func(p *policypb.Policy) { p.Tenants[1].Credentials = nil }, "tenants[1].credentials", "at least one credential is required"},
		{"negative max_connections", func(p *policypb.Policy) { p.Tenants[1].Limits.MaxConnections = -1 }, "tenants[1].limits.max_connections", "must not be negative"},
		{"negative max_transactions", func(p *policypb.Policy) { p.Tenants[0].Limits.MaxTransactions = -5 }, "tenants[0].limits.max_transactions", "must not be negative"},
		{"negative commands_per_second", func(p *policypb.Policy) { p.Tenants[0].Limits.CommandsPerSecond = -5 }, "tenants[0].limits.commands_per_second", "must not be negative"},
		{"unqualified table", func(p *policypb.Policy) { p.Tables[1].Name = "currencies" }, "tables[1].name", `"currencies" is not a schema-qualified table name`},
		{"duplicate table", func(p *policypb.Policy) { p.Tables[1].Name = "public.orders" }, "tables[1].name", `table "public.orders" is listed twice`},
		{"shared with column", func(p *policypb.Policy) { p.Tables[1].TenantColumn = "tenant_id" }, "tables[1].tenant_column", "a shared table has no tenant column"},
		{"isolated without column", func(p *policypb.Policy) { p.Tables[0].TenantColumn = "" }, "tables[0].tenant_column", `"" is not a column name`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := twoTenants()
			tc.change(p)
			before := proto.Clone(p)
			err := policypb.Validate(p)
			if !proto.Equal(p, before) {
				t.Fatal("Validate changed the policy")
			}
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *policy.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want a FieldError for %s", err, tc.field)
			}
			if fe.Field != tc.field || !strings.HasPrefix(fe.Msg, tc.msg) {
				t.Fatalf("Validate = %q, want %q", err, tc.field+": "+tc.msg+"…")
			}
			if want := tc.field + ": " + tc.msg; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("message %q does not start with %q", err, want)
			}
		})
	}
}

// TestValidateNeverQuotesCredentials: a plaintext password in the wrong
// place must not end up in logs through the error.
func TestValidateNeverQuotesCredentials(t *testing.T) {
	for _, cred := range []string{"hunter2-but-longer", "SCRAM-SHA-256$hunter2-but-longer", "SCRAM-SHA-256$4096:hunter2$x:y"} {
		p := twoTenants()
		p.Tenants[0].Credentials[0] = cred
		err := policypb.Validate(p)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("Validate(%q) = %v", cred, err)
		}
	}
}

func TestValidateNil(t *testing.T) {
	if err := policypb.Validate(nil); err == nil {
		t.Fatal("Validate(nil) passed")
	}
}

func TestHashCredentials(t *testing.T) {
	p := twoTenants()
	p.Tenants[0].Credentials = []string{"acme-secret-1", acmeVerifier2}
	p.Tenants[1].Credentials = append(p.Tenants[1].Credentials, "globex-other-secret")
	if err := policypb.Validate(p); err == nil || !strings.HasPrefix(err.Error(), "tenants[0].credentials[0]: not a SCRAM-SHA-256 verifier") {
		t.Fatalf("Validate with plaintext = %v", err)
	}
	if err := policypb.HashCredentials(p); err != nil {
		t.Fatal(err)
	}
	if err := policypb.Validate(p); err != nil {
		t.Fatalf("Validate after HashCredentials: %v", err)
	}
	if got := p.Tenants[0].Credentials[1]; got != acmeVerifier2 {
		t.Errorf("a verifier was rehashed: %q", got)
	}
	spec, err := policypb.ToSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ tenant, password string }{{"acme", "acme-secret-1"}, {"acme", "acme-secret-2"}, {"globex", "globex-secret"}, {"globex", "globex-other-secret"}} {
		if !verifies(snap, tc.tenant, tc.password) {
			t.Errorf("%s does not authenticate %s after HashCredentials", tc.password, tc.tenant)
		}
	}
	if verifies(snap, "acme", "globex-secret") {
		t.Error("globex's password authenticates acme")
	}
	again := proto.CloneOf(p)
	if err := policypb.HashCredentials(again); err != nil || !proto.Equal(again, p) {
		t.Fatalf("HashCredentials on verifiers only changed the policy (err %v)", err)
	}
}

func TestHashCredentialsRefusesShortPasswords(t *testing.T) {
	p := twoTenants()
	p.Tenants[0].Credentials = []string{"long-enough-1"}
	p.Tenants[1].Credentials = []string{"short"}
	before := proto.Clone(p)
	err := policypb.HashCredentials(p)
	var fe *policy.FieldError
	if !errors.As(err, &fe) || fe.Field != "tenants[1].credentials[0]" || fe.Msg != "password must have at least 8 characters" {
		t.Fatalf("HashCredentials = %v", err)
	}
	if !proto.Equal(p, before) {
		t.Fatal("HashCredentials changed the policy although it failed")
	}
}

func verifies(s *policy.Snapshot, tenant, password string) bool {
	t, ok := s.Tenant(tenant)
	if !ok {
		return false
	}
	for _, v := range t.Verifiers() {
		if v.Verify(password) {
			return true
		}
	}
	return false
}
