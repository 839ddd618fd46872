package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/controlplane/store/audittest"
)

// TestAuditIncremental: an incremental check reads from the checkpoint,
// catches what changes there and after it, misses an earlier row altered
// in place (the full check's job), and keeps reporting a problem until a
// full check passes.
func TestAuditIncremental(t *testing.T) {
	key := newKey(t)
	db := newDatabase(t)
	s := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: key}))
	ctx := ctxT(t, time.Minute)
	fiveChanges(t, s)
	rep, err := s.VerifyAudit(ctx, store.VerifyIncremental)
	wantVerified(t, rep, err, 5)
	if rep.Mode != store.VerifyFull || rep.Checked != 5 || rep.LastFull.IsZero() {
		t.Fatalf("the first check, without a checkpoint: %+v", rep)
	}
	for range 2 {
		if _, err := s.Put(ctx, "alice", "", testPolicy(t, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	rep, err = s.VerifyAudit(ctx, store.VerifyIncremental)
	wantVerified(t, rep, err, 7)
	if rep.Mode != store.VerifyIncremental || rep.Checked != 2 {
		t.Fatalf("after two writes: %+v", rep)
	}
	rep, err = s.VerifyAudit(ctx, store.VerifyIncremental)
	wantVerified(t, rep, err, 7)
	if rep.Checked != 0 {
		t.Fatalf("nothing new: %+v", rep)
	}
	restore := db.save(t)

	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T)
		seq    int64 // where the incremental check finds it; 0: it does not
		reason string
	}{
		{"checkpoint entry altered", func(t *testing.T) {
			db.exec(t, `UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 7`)
		}, 7, "altered: the entry's content does not match its hash"},
		{"checkpoint version altered", func(t *testing.T) {
			db.exec(t, `UPDATE tenantguard_cp.versions SET comment = 'routine' WHERE version = 7`)
		}, 7, "version 7 comment altered"},
		{"checkpoint entry re-hashed", func(t *testing.T) {
			db.exec(t, `UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 7;
				UPDATE tenantguard_cp.versions SET author = 'mallory' WHERE version = 7`)
			if err := audittest.Rechain(ctx, audittest.Connect(t, ctx, db.url), 7); err != nil {
				t.Fatal(err)
			}
		}, 7, "altered: the entry's hash differs from the one verified earlier"},
		{"early entry rewritten, later hashes recomputed", func(t *testing.T) { forge(t, db, 2) },
			7, "altered: the entry's hash differs from the one verified earlier"},
		{"checkpoint entry's signature removed", func(t *testing.T) {
			db.exec(t, `UPDATE tenantguard_cp.audit SET key_id = NULL, signature = NULL WHERE seq = 7`)
		}, 7, "not signed"},
		{"newest entries deleted with the head", func(t *testing.T) {
			db.exec(t, `DELETE FROM tenantguard_cp.audit WHERE seq >= 6; DELETE FROM tenantguard_cp.versions WHERE version >= 6;
				UPDATE tenantguard_cp.head SET (version, audit_seq, audit_hash) = (SELECT version, seq, hash FROM tenantguard_cp.audit WHERE seq = 5)`)
		}, 7, "missing: the entry, verified earlier, is gone"},
		{"entry appended, badly signed", func(t *testing.T) {
			if err := audittest.Append(ctx, audittest.Connect(t, ctx, db.url), 1, func(h []byte) (string, []byte) {
				return key.ID(), make([]byte, 64)
			}); err != nil {
				t.Fatal(err)
			}
		}, 8, "does not verify"},
		{"entry appended, unsigned", func(t *testing.T) {
			if err := audittest.Append(ctx, audittest.Connect(t, ctx, db.url), 1, nil); err != nil {
				t.Fatal(err)
			}
		}, 8, "not signed, but the chain is signed from seq 1"},
		{"early entry altered in place", func(t *testing.T) {
			db.exec(t, `UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 2`)
		}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restore()
			// A full check passes, which also resets the checkpoint to 7.
			rep, err := s.VerifyAudit(ctx, store.VerifyFull)
			wantVerified(t, rep, err, 7)
			tc.tamper(t)
			rep, err = s.VerifyAudit(ctx, store.VerifyIncremental)
			if tc.seq == 0 {
				wantVerified(t, rep, err, 7)
				// The full check finds it, and from then on every check does.
				rep, err = s.VerifyAudit(ctx, store.VerifyFull)
				wantBroken(t, rep, err, 2, "altered: the entry's content does not match its hash")
				rep, err = s.VerifyAudit(ctx, store.VerifyIncremental)
				wantBroken(t, rep, err, 2, "altered")
				return
			}
			wantBroken(t, rep, err, tc.seq, tc.reason)
			if rep.Mode != store.VerifyIncremental {
				t.Fatalf("ran %v", rep.Mode)
			}
			// A full check finds it too: it does not clear what the
			// checkpoint knows.
			rep, fullErr := s.VerifyAudit(ctx, store.VerifyFull)
			if !errors.Is(fullErr, store.ErrTampered) {
				t.Fatalf("the full check passed: %+v %v", rep, fullErr)
			}
			// Sticky: the last problem found is still reported after the
			// rows are put back, until a full check passes.
			restore()
			if _, err = s.VerifyAudit(ctx, store.VerifyIncremental); err == nil || err.Error() != fullErr.Error() {
				t.Fatalf("after the rows are put back: %v, want %v", err, fullErr)
			}
			rep, err = s.VerifyAudit(ctx, store.VerifyFull)
			wantVerified(t, rep, err, 7)
			rep, err = s.VerifyAudit(ctx, store.VerifyIncremental)
			wantVerified(t, rep, err, 7)
		})
	}
}

// TestAuditCursor: a page read after a cursor fails when the cursor's
// entry changed since.
func TestAuditCursor(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	fiveChanges(t, s)
	ctx := ctxT(t, 30*time.Second)
	first, err := s.Audit(ctx, store.AuditQuery{Limit: 2})
	if err != nil || len(first.Entries) != 2 || !first.More {
		t.Fatalf("%+v %v", first, err)
	}
	last := first.Entries[1]
	next, err := s.Audit(ctx, store.AuditQuery{Limit: 2, After: last.Seq, AfterHash: last.Hash})
	if err != nil || len(next.Entries) != 2 || next.Entries[0].Seq != 3 || !bytes.Equal(next.Entries[0].PrevHash, last.Hash) || !next.More {
		t.Fatalf("%+v %v", next, err)
	}
	end, err := s.Audit(ctx, store.AuditQuery{Limit: 2, After: 4, AfterHash: next.Entries[1].Hash})
	if err != nil || len(end.Entries) != 1 || end.More {
		t.Fatalf("%+v %v", end, err)
	}
	restore := db.save(t)
	for _, tamper := range []string{
		`UPDATE tenantguard_cp.audit SET hash = sha256(hash) WHERE seq = 2`,
		`DELETE FROM tenantguard_cp.audit WHERE seq = 2`,
	} {
		restore()
		db.exec(t, tamper)
		if _, err := s.Audit(ctx, store.AuditQuery{Limit: 2, After: last.Seq, AfterHash: last.Hash}); !errors.Is(err, store.ErrCursorMismatch) {
			t.Fatalf("%s: %v", tamper, err)
		}
	}
}

// TestAuditMetrics: what the Store exports of the audit chain.
func TestAuditMetrics(t *testing.T) {
	key := newKey(t)
	db := newDatabase(t)
	s := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: key}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	ctx := ctxT(t, 30*time.Second)
	started := float64(time.Now().Unix())
	if n, err := testutil.GatherAndCount(reg, "tenantguard_controlplane_audit_chain_ok"); err != nil || n != 0 {
		t.Fatalf("audit_chain_ok before the first check: %d series, %v", n, err)
	}
	fiveChanges(t, s)
	if _, err := s.VerifyAudit(ctx, store.VerifyIncremental); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "alice", "", testPolicy(t, "acme")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAudit(ctx, store.VerifyIncremental); err != nil {
		t.Fatal(err)
	}
	db.exec(t, `UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 6`)
	if _, err := s.VerifyAudit(ctx, store.VerifyIncremental); err == nil {
		t.Fatal("tampering not found")
	}
	want := fmt.Sprintf(`
# HELP tenantguard_controlplane_audit_chain_ok 1 if the audit chain verified at the last check, 0 if it did not (altered, deleted or inserted entries or versions, bad or missing signatures); a problem stays 0 until a full check passes; absent before the first check.
# TYPE tenantguard_controlplane_audit_chain_ok gauge
tenantguard_controlplane_audit_chain_ok 0
# HELP tenantguard_controlplane_audit_checks_total Audit chain checks by mode (incremental, full) and result: ok, broken, or error (the store could not be read).
# TYPE tenantguard_controlplane_audit_checks_total counter
tenantguard_controlplane_audit_checks_total{mode="full",result="broken"} 0
tenantguard_controlplane_audit_checks_total{mode="full",result="error"} 0
tenantguard_controlplane_audit_checks_total{mode="full",result="ok"} 1
tenantguard_controlplane_audit_checks_total{mode="incremental",result="broken"} 1
tenantguard_controlplane_audit_checks_total{mode="incremental",result="error"} 0
tenantguard_controlplane_audit_checks_total{mode="incremental",result="ok"} 1
# HELP tenantguard_controlplane_audit_keyed_from_seq The first signed audit entry (0: none is); entries before it were written without an audit key.
# TYPE tenantguard_controlplane_audit_keyed_from_seq gauge
tenantguard_controlplane_audit_keyed_from_seq 1
# HELP tenantguard_controlplane_audit_signing_key_info 1, labelled with the id of the key this control plane signs audit entries with; absent without one.
# TYPE tenantguard_controlplane_audit_signing_key_info gauge
tenantguard_controlplane_audit_signing_key_info{key_id=%q} 1
# HELP tenantguard_controlplane_audit_verified_seq The checkpoint: the audit chain verified from its first entry up to this seq.
# TYPE tenantguard_controlplane_audit_verified_seq gauge
tenantguard_controlplane_audit_verified_seq 6
`, key.ID())
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tenantguard_controlplane_audit_chain_ok", "tenantguard_controlplane_audit_checks_total",
		"tenantguard_controlplane_audit_keyed_from_seq", "tenantguard_controlplane_audit_signing_key_info",
		"tenantguard_controlplane_audit_verified_seq"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "tenantguard_controlplane_audit_last_check_timestamp_seconds", "tenantguard_controlplane_audit_last_full_check_timestamp_seconds":
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v < started-1 || v > float64(time.Now().Unix())+1 {
				t.Errorf("%s = %v", mf.GetName(), v)
			}
		}
	}
}

// TestAuditVerifiedOffline runs the auditor's recipe of the package
// documentation (psql and Python) against an upgraded store signed with
// two keys in turn, then against a forgery.
func TestAuditVerifiedOffline(t *testing.T) {
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("no psql")
	}
	if err := exec.Command("python3", "-c", "import cryptography").Run(); err != nil {
		t.Skip("no python3 with the cryptography package")
	}
	query, script := recipe(t)
	k1, k2 := newKey(t), newKey(t)
	db := newDatabase(t)
	ctx := ctxT(t, time.Minute)
	loadV1(t, db)
	a := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: k1}))
	if _, err := a.Put(ctx, "Zoë <ops>", "tabs\tand \"quotes\", ünïcödé, <&>", testPolicy(t, "acme")); err != nil {
		t.Fatal(err)
	}
	b := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: k2, Verification: []*auditkey.VerificationKey{k1.Public()}}))
	if _, err := b.Rollback(ctx, "bob", 2); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pubs := filepath.Join(dir, "audit.pub")
	if err := os.WriteFile(pubs, append(k1.Public().MarshalPEM(), k2.Public().MarshalPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "verify_audit.py"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	audit := func() (string, error) {
		t.Helper()
		out, err := exec.CommandContext(ctx, psql, db.url, "-XAt", "-c", query).Output()
		if err != nil {
			t.Fatalf("psql: %v", err)
		}
		jsonl := filepath.Join(dir, "audit.jsonl")
		if err := os.WriteFile(jsonl, out, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := exec.CommandContext(ctx, "python3", filepath.Join(dir, "verify_audit.py"), jsonl, pubs).CombinedOutput()
		return strings.TrimSpace(string(res)), err
	}
	out, err := audit()
	if err != nil || !strings.HasPrefix(out, "7 entries verify, signed from seq 6;") {
		t.Fatalf("recipe: %v\n%s", err, out)
	}
	rep, err := b.VerifyAudit(ctx, store.VerifyFull) // Go agrees
	wantVerified(t, rep, err, 7)
	forge(t, db, 3)
	if out, err := audit(); err == nil || out != "seq 6: the signature does not verify" {
		t.Fatalf("recipe on a forged history: %v\n%s", err, out)
	}
}

// recipe extracts the auditor's psql query and Python script from the
// package documentation.
func recipe(t *testing.T) (query, script string) {
	t.Helper()
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	var psqlBlock, pyBlock string
	in := false
	for _, line := range strings.Split(string(src), "\n") {
		if code, ok := strings.CutPrefix(line, "//\t"); ok {
			block, in = append(block, code), true
			continue
		}
		if in {
			text := strings.Join(block, "\n")
			switch {
			case strings.HasPrefix(text, "psql "):
				psqlBlock = text
			case strings.HasPrefix(text, "import hashlib"):
				pyBlock = text + "\n"
			}
			block, in = nil, false
		}
	}
	q, ok := strings.CutPrefix(psqlBlock, `psql "$DATABASE_URL" -XAt -c "`)
	q, _, ok2 := strings.Cut(q, `" > audit.jsonl`)
	if !ok || !ok2 || pyBlock == "" {
		t.Fatalf("no recipe in doc.go:\n%s\n%s", psqlBlock, pyBlock)
	}
	return strings.ReplaceAll(q, `\"`, `"`), pyBlock
}
