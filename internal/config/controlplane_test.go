package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
)

const validControlPlane = `
listen:
  xds: 127.0.0.1:18000
  admin: 127.0.0.1:18001
database: postgres://tg_cp:pw@127.0.0.1:5432/tenantguard
admin_token: admin-token-0123456789
`

// controlPlaneDir writes an audit signing key (mode perm) and two public
// keys of other keys (one file) into a directory.
func controlPlaneDir(t *testing.T, perm os.FileMode) (dir string, signing *auditkey.SigningKey, others []*auditkey.VerificationKey) {
	t.Helper()
	dir = t.TempDir()
	var err error
	if signing, err = auditkey.Generate(); err != nil {
		t.Fatal(err)
	}
	var bundle []byte
	for range 2 {
		k, err := auditkey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		others = append(others, k.Public())
		bundle = append(bundle, k.Public().MarshalPEM()...)
	}
	for name, data := range map[string][]byte{"audit.key": signing.MarshalPEM(), "old.pub": bundle, "junk.pub": []byte("not a key")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "audit.key"), perm); err != nil {
		t.Fatal(err)
	}
	return dir, signing, others
}

func TestControlPlaneAudit(t *testing.T) {
	dir, signing, others := controlPlaneDir(t, 0o600)
	cfg, err := ParseControlPlane(filepath.Join(dir, "cp.yaml"), []byte(validControlPlane+`
audit_key_file: audit.key
audit_verification_keys: [old.pub]
audit_signed_from: 12
audit_check_interval: 1m
audit_full_check_interval: 6h
`))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Audit
	if a.SigningKey == nil || a.SigningKey.ID() != signing.ID() || len(a.VerificationKeys) != 2 || a.VerificationKeys[1].ID() != others[1].ID() ||
		a.SignedFrom != 12 || a.CheckInterval != time.Minute || a.FullCheckInterval != 6*time.Hour {
		t.Fatalf("%+v", a)
	}

	cfg, err = ParseControlPlane(filepath.Join(dir, "cp.yaml"), []byte(validControlPlane))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Audit; a.SigningKey != nil || a.VerificationKeys != nil || a.CheckInterval != 5*time.Minute || a.FullCheckInterval != time.Hour {
		t.Fatalf("defaults: %+v", a)
	}
	// A group-readable key (a Kubernetes Secret mounted 0440 with fsGroup).
	dir, _, _ = controlPlaneDir(t, 0o440)
	if _, err := ParseControlPlane(filepath.Join(dir, "cp.yaml"), []byte(validControlPlane+"audit_key_file: audit.key\n")); err != nil {
		t.Fatal(err)
	}
}

func TestControlPlaneAuditErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		perm os.FileMode
		yaml string
		want string
	}{
		{"key readable by others", 0o644, "audit_key_file: audit.key", "audit_key_file: " + "DIR/audit.key is accessible to others (mode 0644): chmod 600"},
		{"key missing", 0o600, "audit_key_file: nope.key", "audit_key_file: stat DIR/nope.key: no such file"},
		{"public key as signing key", 0o600, "audit_key_file: old.pub", `audit_key_file: DIR/old.pub: invalid audit key: a "PUBLIC KEY" PEM block`},
		{"not a verification key", 0o600, "audit_verification_keys: [old.pub, junk.pub]", "audit_verification_keys[1]: invalid audit key: no PUBLIC KEY PEM block"},
		{"signed_from without keys", 0o600, "audit_signed_from: 3", "audit_signed_from: needs audit_key_file or audit_verification_keys"},
		{"negative signed_from", 0o600, "audit_key_file: audit.key\naudit_signed_from: -1", "audit_signed_from: must be a seq"},
		{"check interval too short", 0o600, "audit_check_interval: 10ms", "audit_check_interval: must be at least 1s"},
		{"full check interval too short", 0o600, "audit_full_check_interval: 500ms", "audit_full_check_interval: must be at least 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, _ := controlPlaneDir(t, tc.perm)
			_, err := ParseControlPlane(filepath.Join(dir, "cp.yaml"), []byte(validControlPlane+tc.yaml+"\n"))
			want := strings.ReplaceAll(tc.want, "DIR", dir)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%v, want %q", err, want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Fatal("the error quotes the key")
			}
		})
	}
}
