package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/controlplane/store/audittest"
	"github.com/tenantguard/tenantguard/test/harness"
)

type auditAnswer struct {
	Entries []struct {
		Seq       int64  `json:"seq"`
		Hash      string `json:"hash"`
		KeyID     string `json:"key_id"`
		Signature string `json:"signature"`
	} `json:"entries"`
	Verified     bool   `json:"verified"`
	Verification string `json:"verification"`
	VerifiedSeq  int64  `json:"verified_seq"`
	KeyedFromSeq int64  `json:"keyed_from_seq"`
	FirstBad     *int64 `json:"first_bad_seq"`
	Problem      string `json:"problem"`
}

// TestAuditKeys: the built control plane with keys made by `tenantguard
// controlplane auditkey`. Its entries are signed and verify with the
// public key alone; after a restart with a new key (the old one's public
// half kept) the chain verifies across both; a database superuser's
// rewrite of the first entry with every later hash recomputed is caught
// there; a key others may read is a configuration error.
func TestAuditKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg := harness.Postgres(t)
	if err := pg.Exec(ctx, "postgres", "CREATE DATABASE audit_cp"); err != nil && !strings.Contains(err.Error(), "42P04") {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "audit_cp", "DROP SCHEMA IF EXISTS tenantguard_cp CASCADE"); err != nil { // a fresh store each run
		t.Fatal(err)
	}
	dir := t.TempDir()
	keys := map[string]*auditkey.VerificationKey{}
	for _, name := range []string{"k1", "k2"} {
		out := string(run(t, nil, nil, "controlplane", "auditkey", "--out", filepath.Join(dir, name+".key")))
		for file, mode := range map[string]os.FileMode{name + ".key": 0o600, name + ".pub": 0o644} {
			fi, err := os.Stat(filepath.Join(dir, file))
			if err != nil || fi.Mode().Perm() != mode {
				t.Fatalf("%s: %v %v", file, fi.Mode(), err)
			}
		}
		data, err := os.ReadFile(filepath.Join(dir, name+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := auditkey.ParseVerificationKeys(data)
		if err != nil || !strings.Contains(out, "key id "+pub[0].ID()) {
			t.Fatalf("%v %s", err, out)
		}
		keys[name] = pub[0]
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("name: default\ntenants:\n  - id: acme\n    credentials: [\"acme-secret-1\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	xdsAddr, cpAdmin := freeAddr(t), freeAddr(t)
	api := "http://" + cpAdmin
	cpCfg := filepath.Join(dir, "controlplane.yaml")
	writeConfig := func(extra string) {
		t.Helper()
		if err := os.WriteFile(cpCfg, []byte(fmt.Sprintf("listen:\n  xds: %q\n  admin: %q\ndatabase: %q\nadmin_token: %s\nseed: policy.yaml\naudit_signed_from: 1\n%s",
			xdsAddr, cpAdmin, pg.AdminURL("audit_cp"), e2eAdminToken, extra)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startCP := func() *process {
		t.Helper()
		cp := start(t, "controlplane", "--config", cpCfg)
		harness.Eventually(t, 30*time.Second, func() error {
			if err := cp.exited(); err != nil {
				t.Fatalf("controlplane exited: %v\n%s", err, cp.output())
			}
			if code, _, err := httpGet(ctx, api+"/readyz"); err != nil || code != 200 {
				return fmt.Errorf("readyz %d %v", code, err)
			}
			return nil
		})
		return cp
	}
	stopCP := func(cp *process) {
		t.Helper()
		if err := cp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := cp.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("controlplane exit code %d\n%s", code, cp.output())
		}
	}
	audit := func(query string) auditAnswer {
		t.Helper()
		var a auditAnswer
		if st := callJSON(t, api, e2eAdminToken, "GET", "/v1/audit"+query, "", &a); st != http.StatusOK {
			t.Fatalf("GET /v1/audit%s: %d", query, st)
		}
		return a
	}
	suspend := func(action string) {
		t.Helper()
		if st := callJSON(t, api, e2eAdminToken, "POST", "/v1/tenants/acme/"+action, "", nil); st != http.StatusOK {
			t.Fatalf("%s: %d", action, st)
		}
	}

	// k1 signs the seed and a change.
	writeConfig("audit_key_file: k1.key\n")
	cp := startCP()
	suspend("suspend")
	a := audit("")
	if !a.Verified || a.KeyedFromSeq != 1 || len(a.Entries) != 2 {
		t.Fatalf("%+v", a)
	}
	for _, e := range a.Entries {
		hash, _ := hex.DecodeString(e.Hash)
		sig, _ := hex.DecodeString(e.Signature)
		if e.KeyID != keys["k1"].ID() || !keys["k1"].VerifyEntry(hash, sig) {
			t.Fatalf("seq %d is not signed with k1: %+v", e.Seq, e)
		}
	}
	metrics := api + "/metrics"
	if v := metricValue(t, ctx, metrics, `tenantguard_controlplane_audit_signing_key_info{key_id="`+keys["k1"].ID()+`"}`); v != 1 {
		t.Fatalf("signing_key_info %v", v)
	}
	stopCP(cp)

	// Rotation: k2 signs, k1's public half verifies the older entries.
	writeConfig("audit_key_file: k2.key\naudit_verification_keys: [k1.pub]\n")
	cp = startCP()
	suspend("resume")
	a = audit("?verify=full")
	if !a.Verified || a.VerifiedSeq != 3 || a.Entries[2].KeyID != keys["k2"].ID() || a.Entries[1].KeyID != keys["k1"].ID() {
		t.Fatalf("after the rotation: %+v", a)
	}
	if v := metricValue(t, ctx, metrics, "tenantguard_controlplane_audit_chain_ok"); v != 1 {
		t.Fatalf("audit_chain_ok %v", v)
	}

	// A superuser rewrites who seeded the store and recomputes every hash
	// after it: the first entry's signature no longer matches.
	conn := audittest.Connect(t, ctx, pg.AdminURL("audit_cp"))
	if _, err := conn.Exec(ctx, `UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 1;
		UPDATE tenantguard_cp.versions SET author = 'mallory' WHERE version = 1`); err != nil {
		t.Fatal(err)
	}
	if err := audittest.Rechain(ctx, conn, 1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query  string
		seq    int64
		reason string
	}{
		// The incremental check re-reads its checkpoint, seq 3, whose hash changed.
		{"", 3, "hash differs from the one verified earlier"},
		{"?verify=full", 1, "signature (key " + keys["k1"].ID() + ") does not verify"},
	} {
		a = audit(tc.query)
		if a.Verified || a.FirstBad == nil || *a.FirstBad != tc.seq || !strings.Contains(a.Problem, tc.reason) {
			t.Fatalf("forged history, %q: %+v", tc.query, a)
		}
	}
	if v := metricValue(t, ctx, metrics, "tenantguard_controlplane_audit_chain_ok"); v != 0 {
		t.Fatalf("audit_chain_ok %v after the forgery", v)
	}
	stopCP(cp)

	// A key others may read is refused, without quoting it.
	if err := os.Chmod(filepath.Join(dir, "k2.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, binary, "controlplane", "--config", cpCfg).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "audit_key_file") ||
		!strings.Contains(string(out), "accessible to others") || strings.Contains(string(out), "PRIVATE KEY") {
		t.Fatalf("a readable key: %v\n%s", err, out)
	}
}
