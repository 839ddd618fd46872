package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/policy"
)

// keyFiles writes a signing key and its verification key into dir.
func keyFiles(t *testing.T, dir, id string) (signing, verify string) {
	t.Helper()
	k, err := token.GenerateKey(id)
	if err != nil {
		t.Fatal(err)
	}
	signing, verify = filepath.Join(dir, id+".key.pem"), filepath.Join(dir, id+".pub.pem")
	if err := os.WriteFile(signing, k.MarshalPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(verify, k.Public().MarshalPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return signing, verify
}

func TestSidecarSessions(t *testing.T) {
	dir := t.TempDir()
	keyFiles(t, dir, "k1") // named relative to the config file below
	_, v2 := keyFiles(t, dir, "k2")
	text := valid + "sessions:\n  store: redis://127.0.0.1:6379/1\n  verification_keys: [k1.pub.pem, " + v2 + "]\n  end_mode: immediate\n  grace: 5s\n"
	sc, err := Parse(filepath.Join(dir, "sidecar.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	s := sc.Sessions
	if s == nil || s.StoreURL != "redis://127.0.0.1:6379/1" || len(s.VerificationKeys) != 2 || s.EndMode != policy.SessionEndImmediate || s.Grace != 5*time.Second || s.SigningKey != nil {
		t.Fatalf("sessions %+v", s)
	}
	noSessions, err := Parse("sidecar.yaml", []byte(valid))
	if err != nil || noSessions.Sessions != nil {
		t.Fatalf("no sessions section: %+v %v", noSessions.Sessions, err)
	}
}

func TestSessionsErrors(t *testing.T) {
	dir := t.TempDir()
	signing, verify := keyFiles(t, dir, "k1")
	for _, tc := range []struct {
		name, section, want string
	}{
		{"no store", "  verification_keys: [" + verify + "]\n", "sessions.store: required"},
		{"not redis", "  store: http://x:1\n  verification_keys: [" + verify + "]\n", "sessions.store: required: a redis:// URL"},
		{"no keys", "  store: redis://127.0.0.1:6379\n", "sessions.verification_keys: at least one"},
		{"missing key file", "  store: redis://127.0.0.1:6379\n  verification_keys: [nope.pem]\n", "sessions.verification_keys[0]: open"},
		{"signing key given to a sidecar", "  store: redis://127.0.0.1:6379\n  verification_keys: [" + verify + "]\n  signing_key: " + signing + "\n", "sessions.signing_key: a sidecar only verifies"},
		{"a signing key as verification key", "  store: redis://127.0.0.1:6379\n  verification_keys: [" + signing + "]\n", "sessions.verification_keys[0]:"},
		{"duplicate key", "  store: redis://127.0.0.1:6379\n  verification_keys: [" + verify + ", " + verify + "]\n", `key id "k1" is listed twice`},
		{"bad end mode", "  store: redis://127.0.0.1:6379\n  verification_keys: [" + verify + "]\n  end_mode: later\n", `sessions.end_mode: "later" is not an end mode`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "sidecar.yaml"), []byte(valid+"sessions:\n"+tc.section))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestExtAuthzConfig(t *testing.T) {
	dir := t.TempDir()
	_, old := keyFiles(t, dir, "k-old")
	keyFiles(t, dir, "k-new") // named relative to the config file below
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("an-admin-token-of-some-length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := `listen:
  grpc: 127.0.0.1:9001
  http: 127.0.0.1:9002
admin_token_file: admin.token
sessions:
  store: redis://127.0.0.1:6379/1
  signing_key: k-new.key.pem
  verification_keys: [` + old + `]
  ttl: 10m
  max_age: 8h
  strip_authorization: false
tenants: [acme, globex]
`
	name := filepath.Join(dir, "extauthz.yaml")
	c, err := ParseExtAuthz(name, []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range c.Sessions.VerificationKeys {
		ids = append(ids, k.ID())
	}
	if c.AdminToken != "an-admin-token-of-some-length" || c.Sessions.SigningKey.ID() != "k-new" || strings.Join(ids, ",") != "k-old,k-new" ||
		c.Sessions.TTL != 10*time.Minute || c.Sessions.MaxAge != 8*time.Hour || c.Sessions.StripAuthorization || !c.Tenants["globex"] {
		t.Fatalf("config %+v, sessions %+v, keys %v", c, c.Sessions, ids)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"no grpc", "  grpc: 127.0.0.1:9001\n", "", "listen.grpc: required"},
		{"short admin token", "admin_token_file: admin.token", "admin_token: short", "admin_token: required, at least 16"},
		{"both admin tokens", "admin_token_file: admin.token", "admin_token_file: admin.token\nadmin_token: another-admin-token-1234", "not both"},
		{"no signing key", "  signing_key: k-new.key.pem\n", "", "sessions.signing_key: required"},
		{"ttl too short", "ttl: 10m", "ttl: 10ms", "sessions.ttl: must be at least 1s"},
		{"max age below ttl", "max_age: 8h", "max_age: 5m", "sessions.max_age: must not be shorter"},
		{"bad tenant", "tenants: [acme, globex]", "tenants: [acme, Globex]", `tenants[1]: "Globex" is not a valid tenant id`},
		{"no tenants", "tenants: [acme, globex]", "tenants: []", "tenants: at least one"},
		{"unknown field", "tenants: [acme, globex]", "tenants: [acme]\nlisten_http: x", "field listen_http not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(good, tc.from, tc.to, 1)
			if text == good {
				t.Fatalf("case did not change the config (from %q)", tc.from)
			}
			_, err := ParseExtAuthz(name, []byte(text))
			if err == nil || !strings.HasPrefix(err.Error(), name+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to name the file and contain %q", err, tc.want)
			}
		})
	}
}
