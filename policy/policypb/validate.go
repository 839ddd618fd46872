package policypb

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/wire/scram"
)

// emulable are the commands redis.emulate may name: those the sidecar
// configuration's redis.emulate accepts.
var emulable = map[string]bool{"flushdb": true, "flushall": true, "dbsize": true}

// Validate checks p and returns the first problem it finds as a
// *policy.FieldError whose Field is the protojson path of the offending field
// ("tenants[1].credentials[0]: not a SCRAM-SHA-256 verifier ..."), or nil
// when p is valid. The rules only the message has (the resource name's
// form, credentials are verifiers, durations valid and not negative, enums
// in range, Redis and session settings) are checked first, in field order;
// then policy.Compile's
// rules (tenant ids, duplicates, limits, table names and columns) on ToSpec's
// conversion, suspended tenants included. Validate never changes p and never
// puts a credential's text in an error.
func Validate(p *Policy) error {
	if p == nil {
		return errors.New("policy is nil")
	}
	if n := p.GetName(); n != "" && !resourceName.MatchString(n) {
		return &policy.FieldError{Field: "name", Msg: fmt.Sprintf("%q is not a valid resource name (lower-case letters, digits, '.', '-', '_'; at most 63; starts with a letter or digit)", n)}
	}
	if err := checkTenants(p.GetTenants()); err != nil {
		return err
	}
	for i, t := range p.GetTables() {
		if t == nil {
			return &policy.FieldError{Field: fmt.Sprintf("tables[%d]", i), Msg: "missing"}
		}
	}
	if err := checkRedis(p.GetRedis()); err != nil {
		return err
	}
	if err := checkSessions(p.GetSessions()); err != nil {
		return err
	}
	spec, err := toSpec(p, true)
	if err != nil {
		return err
	}
	if _, err := policy.Compile(spec); err != nil {
		var fe *policy.FieldError
		if errors.As(err, &fe) {
			return &policy.FieldError{Field: protoPath(fe.Field), Msg: fe.Msg}
		}
		return fmt.Errorf("compile policy: %w", err)
	}
	return nil
}

// resourceName is the form of Policy.name, the xDS resource name.
var resourceName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// specPasswords matches the Spec name of Tenant.credentials in Compile's
// field paths.
var specPasswords = regexp.MustCompile(`^(tenants\[\d+\])\.passwords\b`)

// protoPath turns a policy.Compile field path into the message's: the
// names are the same but for TenantSpec.Passwords, which is credentials here.
func protoPath(field string) string {
	return specPasswords.ReplaceAllString(field, "${1}.credentials")
}

func checkTenants(tenants []*Tenant) error {
	for i, t := range tenants {
		field := fmt.Sprintf("tenants[%d]", i)
		if t == nil {
			return &policy.FieldError{Field: field, Msg: "missing"}
		}
		for j, c := range t.GetCredentials() {
			if err := checkVerifier(c); err != nil {
				return &policy.FieldError{Field: fmt.Sprintf("%s.credentials[%d]", field, j), Msg: err.Error()}
			}
		}
		if _, err := duration(t.GetLimits().GetStatementTimeout(), field+".limits.statement_timeout"); err != nil {
			return err
		}
	}
	return nil
}

// checkVerifier accepts only a well-formed SCRAM-SHA-256 verifier. Its
// errors never quote the credential, which may be a password.
func checkVerifier(c string) error {
	if !strings.HasPrefix(c, policy.VerifierPrefix) {
		return errors.New("not a SCRAM-SHA-256 verifier (plaintext passwords are not accepted: store the verifier, see HashCredentials)")
	}
	if _, err := scram.ParseVerifier(c); err != nil {
		return fmt.Errorf("not a SCRAM-SHA-256 verifier: %v", err)
	}
	return nil
}

func checkRedis(r *RedisRules) error {
	if r == nil {
		return nil
	}
	if _, ok := NamespaceMode_name[int32(r.GetNamespace())]; !ok {
		return &policy.FieldError{Field: "redis.namespace", Msg: fmt.Sprintf("%d is not a namespace mode (NAMESPACE_MODE_SPREAD or NAMESPACE_MODE_ONE_SLOT)", r.GetNamespace())}
	}
	seen := map[string]bool{}
	for i, name := range r.GetEmulate() {
		field := fmt.Sprintf("redis.emulate[%d]", i)
		if !emulable[name] {
			return &policy.FieldError{Field: field, Msg: fmt.Sprintf("%q cannot be emulated (flushdb, flushall, dbsize)", name)}
		}
		if seen[name] {
			return &policy.FieldError{Field: field, Msg: fmt.Sprintf("%q is listed twice", name)}
		}
		seen[name] = true
	}
	return nil
}

func checkSessions(s *SessionSettings) error {
	if s == nil {
		return nil
	}
	var d [3]time.Duration
	for i, f := range []struct {
		name string
		val  *durationpb.Duration
	}{{"sessions.ttl", s.GetTtl()}, {"sessions.max_age", s.GetMaxAge()}, {"sessions.grace", s.GetGrace()}} {
		v, err := duration(f.val, f.name)
		if err != nil {
			return err
		}
		d[i] = v
	}
	ttl, maxAge := d[0], d[1]
	if ttl != 0 && ttl < time.Second {
		return &policy.FieldError{Field: "sessions.ttl", Msg: "must be at least 1s when set"}
	}
	if maxAge != 0 && ttl != 0 && maxAge < ttl {
		return &policy.FieldError{Field: "sessions.max_age", Msg: "must not be shorter than sessions.ttl"}
	}
	if _, ok := SessionEndMode_name[int32(s.GetEndMode())]; !ok {
		return &policy.FieldError{Field: "sessions.end_mode", Msg: fmt.Sprintf("%d is not an end mode (SESSION_END_MODE_IMMEDIATE or SESSION_END_MODE_BOUNDARY)", s.GetEndMode())}
	}
	return nil
}

// HashCredentials replaces every plaintext credential of p with a
// SCRAM-SHA-256 verifier of it (fresh random salt, PostgreSQL's 4096
// iterations), for the control plane's seed loader, which may read
// plaintext from a seed file. Verifiers are left as they are, malformed ones
// too (Validate reports those). A plaintext shorter than 8 characters is an
// error, as in policy.Compile. On error p is unchanged.
func HashCredentials(p *Policy) error {
	type change struct {
		tenant, cred int
		verifier     string
	}
	var changes []change
	for i, t := range p.GetTenants() {
		for j, c := range t.GetCredentials() {
			if strings.HasPrefix(c, policy.VerifierPrefix) {
				continue
			}
			field := fmt.Sprintf("tenants[%d].credentials[%d]", i, j)
			if err := policy.CheckPassword(c); err != nil {
				return &policy.FieldError{Field: field, Msg: err.Error()}
			}
			v, err := scram.NewVerifier(c)
			if err != nil {
				return &policy.FieldError{Field: field, Msg: err.Error()}
			}
			changes = append(changes, change{i, j, v.String()})
		}
	}
	for _, c := range changes {
		p.Tenants[c.tenant].Credentials[c.cred] = c.verifier
	}
	return nil
}
