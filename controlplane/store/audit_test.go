package store_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
)

// fiveChanges writes seed, put, suspend, resume and rollback: versions
// and audit seqs 1 to 5.
func fiveChanges(t *testing.T, s *store.Store) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	if _, ok, err := s.Seed(ctx, "seed", testPolicy(t, "acme")); err != nil || !ok {
		t.Fatalf("seed: %v %v", ok, err)
	}
	steps := []func() error{
		func() error { _, err := s.Put(ctx, "alice", "add globex", testPolicy(t, "acme", "globex")); return err },
		func() error { _, err := s.SetSuspended(ctx, "ops", "globex", true); return err },
		func() error { _, err := s.SetSuspended(ctx, "ops", "globex", false); return err },
		func() error { _, err := s.Rollback(ctx, "bob", 1); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

func TestAuditChainVerifies(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	if rep, err := s.VerifyAudit(ctx, store.VerifyIncremental); rep.Checked != 0 || rep.Mode != store.VerifyFull || err != nil {
		t.Fatalf("empty trail: %+v %v", rep, err)
	}
	fiveChanges(t, s)
	for i := range 20 {
		if _, err := s.SetSuspended(ctx, "ops", "acme", i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.VerifyAudit(ctx, store.VerifyFull)
	if err != nil || rep.Checked != 25 || rep.VerifiedSeq != 25 || rep.KeyedFromSeq != 0 || rep.SignaturesChecked {
		t.Fatalf("verify: %+v, %v; want 25 entries, hash-only", rep, err)
	}

	var all []store.AuditEntry
	for after := int64(0); ; {
		page, err := s.Audit(ctx, store.AuditQuery{Limit: 7, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) == 0 || page.More != (after+7 < 25) {
			t.Fatalf("after %d: %d entries, more %v", after, len(page.Entries), page.More)
		}
		all = append(all, page.Entries...)
		after = page.Entries[len(page.Entries)-1].Seq
		if !page.More {
			break
		}
	}
	if len(all) != 25 {
		t.Fatalf("paged %d entries, want 25", len(all))
	}
	wantActions := []string{store.ActionSeed, store.ActionPut, store.ActionSuspend, store.ActionResume, store.ActionRollback}
	prev := make([]byte, sha256.Size)
	for i, e := range all {
		if e.Seq != int64(i+1) || e.Version != int64(i+1) {
			t.Fatalf("entry %d: seq %d version %d", i, e.Seq, e.Version)
		}
		if i < len(wantActions) && e.Action != wantActions[i] {
			t.Errorf("seq %d action %s, want %s", e.Seq, e.Action, wantActions[i])
		}
		// Recompute the hash as the package documentation says an
		// auditor would, independently of the store's own code. The
		// values here are ASCII without <, > or &, where encoding/json's
		// compact, key-sorted output is the canonical form.
		var detail map[string]any
		if err := json.Unmarshal(e.Detail, &detail); err != nil {
			t.Fatal(err)
		}
		input, err := json.Marshal([]any{e.Seq, e.At.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.Version, detail, hex.EncodeToString(prev)})
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(input); !bytes.Equal(sum[:], e.Hash) || !bytes.Equal(e.PrevHash, prev) {
			t.Fatalf("seq %d: hash of %s does not match", e.Seq, input)
		}
		prev = e.Hash
		// The policy body is chained too.
		v, err := s.Get(ctx, e.Version)
		if err != nil {
			t.Fatal(err)
		}
		if v.Author != e.Actor || !v.CreatedAt.Equal(e.At) || detail["comment"] != v.Comment {
			t.Errorf("seq %d does not describe version %d: %+v", e.Seq, e.Version, v.VersionInfo)
		}
		if _, ok := detail["policy_sha256"].(string); !ok {
			t.Errorf("seq %d detail lacks policy_sha256: %s", e.Seq, e.Detail)
		}
	}
	if all[4].Actor != "bob" || string(all[4].Detail) == "" || !bytes.Contains(all[4].Detail, []byte(`"rollback_to":1`)) {
		t.Errorf("rollback entry: %s %s", all[4].Actor, all[4].Detail)
	}
}

func TestAuditTamperDetected(t *testing.T) {
	// One history, saved once and restored before each case.
	db := newDatabase(t)
	s := openStore(t, db)
	fiveChanges(t, s)
	ctx := ctxT(t, 30*time.Second)
	restore := db.save(t)
	for _, tc := range []struct {
		name    string
		tamper  string
		seq     int64 // the first bad seq VerifyAudit must name; 0 for none
		version int64
	}{
		{"detail altered", `UPDATE tenantguard_cp.audit SET detail = jsonb_set(detail, '{comment}', '"nothing to see"') WHERE seq = 2`, 2, 2},
		{"actor altered", `UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 3`, 3, 3},
		{"time altered", `UPDATE tenantguard_cp.audit SET at = at - interval '1 day' WHERE seq = 4`, 4, 4},
		{"action altered", `UPDATE tenantguard_cp.audit SET action = 'put' WHERE seq = 3`, 3, 3},
		{"version policy body altered", `UPDATE tenantguard_cp.versions SET policy = jsonb_set(policy, '{tenants,1,suspended}', 'false') WHERE version = 3`, 3, 3},
		{"version author altered", `UPDATE tenantguard_cp.versions SET author = 'mallory' WHERE version = 2`, 2, 2},
		{"version diff altered", `UPDATE tenantguard_cp.versions SET diff = '' WHERE version = 4`, 4, 4},
		{"version comment altered", `UPDATE tenantguard_cp.versions SET comment = 'routine' WHERE version = 2`, 2, 2},
		{"middle entry deleted", `DELETE FROM tenantguard_cp.audit WHERE seq = 3`, 3, 4},
		{"first entry deleted", `DELETE FROM tenantguard_cp.audit WHERE seq = 1`, 1, 2},
		{"newest entry deleted", `DELETE FROM tenantguard_cp.audit WHERE seq = 5`, 5, 0},
		{"newest version deleted", `DELETE FROM tenantguard_cp.versions WHERE version = 5`, 5, 5},
		{"entry appended", `INSERT INTO tenantguard_cp.audit (seq, at, actor, action, version, detail, prev_hash, hash)
			SELECT 6, now(), 'mallory', 'put', 6, '{}', hash, sha256('x') FROM tenantguard_cp.audit WHERE seq = 5`, 6, 6},
		{"entry renumbered", `UPDATE tenantguard_cp.audit SET seq = 7 WHERE seq = 5`, 5, 0},
		{"version inserted without entry", `INSERT INTO tenantguard_cp.versions (version, policy, author, created_at, comment, diff, parent)
			SELECT 6, policy, 'mallory', now(), '', '', 5 FROM tenantguard_cp.versions WHERE version = 5`, 0, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restore()
			if rep, err := s.VerifyAudit(ctx, store.VerifyFull); rep.Checked != 5 || err != nil {
				t.Fatalf("before tampering: %+v %v", rep, err)
			}
			db.exec(t, tc.tamper)
			rep, err := s.VerifyAudit(ctx, store.VerifyFull)
			n := rep.Checked
			var ae *store.AuditError
			if !errors.As(err, &ae) || !errors.Is(err, store.ErrTampered) {
				t.Fatalf("after tampering: %d, %v; want an *AuditError", n, err)
			}
			if ae.Seq != tc.seq || (tc.version != 0 && ae.Version != tc.version) {
				t.Fatalf("AuditError seq %d version %d (%v), want seq %d version %d", ae.Seq, ae.Version, err, tc.seq, tc.version)
			}
			if tc.seq > 0 && int64(n) != tc.seq-1 {
				t.Errorf("%d entries verified before seq %d", n, tc.seq)
			}
		})
	}
}
