package store_test

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/controlplane/store/audittest"
)

func newKey(t *testing.T) *auditkey.SigningKey {
	t.Helper()
	k, err := auditkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// wantBroken fails the test unless err is an *AuditError naming seq, with
// a reason containing reason.
func wantBroken(t *testing.T, rep store.AuditReport, err error, seq int64, reason string) {
	t.Helper()
	var ae *store.AuditError
	if !errors.As(err, &ae) || !errors.Is(err, store.ErrTampered) {
		t.Fatalf("verified (%+v, %v); want a problem at seq %d", rep, err, seq)
	}
	if ae.Seq != seq || !strings.Contains(ae.Reason, reason) {
		t.Fatalf("problem at seq %d: %q; want seq %d, %q", ae.Seq, ae.Reason, seq, reason)
	}
}

func wantVerified(t *testing.T, rep store.AuditReport, err error, verifiedSeq int64) {
	t.Helper()
	if err != nil || rep.VerifiedSeq != verifiedSeq {
		t.Fatalf("%+v, %v; want verified up to seq %d", rep, err, verifiedSeq)
	}
}

// forge rewrites entry seq's actor (and its version's author, which must
// match) the way a database superuser would, then recomputes every later
// hash and the head row.
func forge(t *testing.T, db *database, seq int64) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	conn := audittest.Connect(t, ctx, db.url)
	if _, err := conn.Exec(ctx, `UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = $1;`, seq); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE tenantguard_cp.versions SET author = 'mallory'
		WHERE version = (SELECT version FROM tenantguard_cp.audit WHERE seq = $1)`, seq); err != nil {
		t.Fatal(err)
	}
	if err := audittest.Rechain(ctx, conn, seq); err != nil {
		t.Fatal(err)
	}
}

// stripSignatures removes the signatures of entries from seq on, as if
// they had been written without a key.
func stripSignatures(t *testing.T, db *database, seq int64) {
	t.Helper()
	db.exec(t, `UPDATE tenantguard_cp.audit SET key_id = NULL, signature = NULL WHERE seq >= `+strconv.FormatInt(seq, 10)+`;
		UPDATE tenantguard_cp.head SET audit_key_id = NULL`)
}

// TestAuditForgedHistory: a database superuser rewrites an old entry and
// recomputes every later hash and the head row. The hash chain alone
// cannot tell (the code before audit keys verified this history); with a
// signing key the rewritten entry's signature no longer verifies, and
// verification names it, also after a restart. (A running Store also
// notices, without a key, that its checkpoint's hash changed.)
func TestAuditForgedHistory(t *testing.T) {
	key, own := newKey(t), newKey(t)
	for _, tc := range []struct {
		name   string
		keys   *store.AuditKeys
		tamper func(t *testing.T, db *database)
		seq    int64 // 0: goes unnoticed after a restart
		reason string
	}{
		{"hash-only chain, forged", nil, func(t *testing.T, db *database) { forge(t, db, 2) }, 0, ""},
		{"signed chain, forged", &store.AuditKeys{Signing: key}, func(t *testing.T, db *database) { forge(t, db, 2) }, 2,
			"signature (key " + key.ID() + ") does not verify: the entry was rewritten"},
		{"signed chain, forged and re-signed with another key", &store.AuditKeys{Signing: key}, func(t *testing.T, db *database) {
			forge(t, db, 2)
			ctx := ctxT(t, 30*time.Second)
			if err := audittest.Resign(ctx, audittest.Connect(t, ctx, db.url), 2, func(h []byte) (string, []byte) {
				return own.ID(), own.SignEntry(h)
			}); err != nil {
				t.Fatal(err)
			}
		}, 2, "signed with key \"" + own.ID() + "\", which is not among the audit verification keys"},
		{"signed chain, newest entry's signature flipped", &store.AuditKeys{Signing: key}, func(t *testing.T, db *database) {
			db.exec(t, `UPDATE tenantguard_cp.audit SET signature = set_byte(signature, 0, get_byte(signature, 0) # 1) WHERE seq = 5`)
		}, 5, "does not verify"},
		{"signed chain, one signature removed", &store.AuditKeys{Signing: key}, func(t *testing.T, db *database) {
			db.exec(t, `UPDATE tenantguard_cp.audit SET key_id = NULL, signature = NULL WHERE seq = 3`)
		}, 3, "not signed, but the chain is signed from seq 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := newDatabase(t)
			var opts []store.Option
			if tc.keys != nil {
				opts = append(opts, store.WithAuditKeys(*tc.keys))
			}
			s := openStore(t, db, opts...)
			fiveChanges(t, s)
			ctx := ctxT(t, 30*time.Second)
			rep, err := s.VerifyAudit(ctx, store.VerifyFull)
			wantVerified(t, rep, err, 5)
			if tc.keys != nil && (rep.KeyedFromSeq != 1 || !rep.SignaturesChecked) {
				t.Fatalf("a store keyed from the start: %+v", rep)
			}
			tc.tamper(t, db)
			// The running Store, then one restarted (no checkpoint).
			rep, err = s.VerifyAudit(ctx, store.VerifyFull)
			if tc.seq == 0 {
				wantBroken(t, rep, err, 5, "altered: the entry's hash differs from the one verified earlier")
				rep, err = openStore(t, db, opts...).VerifyAudit(ctx, store.VerifyFull)
				wantVerified(t, rep, err, 5)
				return
			}
			wantBroken(t, rep, err, tc.seq, tc.reason)
			rep, err = openStore(t, db, opts...).VerifyAudit(ctx, store.VerifyFull)
			wantBroken(t, rep, err, tc.seq, tc.reason)
			if rep.Checked != int(tc.seq-1) {
				t.Errorf("%d entries verified before seq %d", rep.Checked, tc.seq)
			}
		})
	}
}

// TestAuditStrippedSignatures: who strips every signature and then
// rewrites history makes a signed chain look like one never signed. A
// running Store remembers where signing began; after a restart only
// AuditKeys.SignedFrom (audit_signed_from) knows.
func TestAuditStrippedSignatures(t *testing.T) {
	key := newKey(t)
	db := newDatabase(t)
	s := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: key}))
	fiveChanges(t, s)
	ctx := ctxT(t, 30*time.Second)
	rep, err := s.VerifyAudit(ctx, store.VerifyFull)
	wantVerified(t, rep, err, 5)
	stripSignatures(t, db, 1)
	forge(t, db, 2)

	rep, err = s.VerifyAudit(ctx, store.VerifyFull)
	wantBroken(t, rep, err, 1, "not signed, but every entry from seq 1 must be")

	restarted := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: key}))
	rep, err = restarted.VerifyAudit(ctx, store.VerifyFull)
	wantVerified(t, rep, err, 5)
	if rep.KeyedFromSeq != 0 {
		t.Fatalf("keyed from %d", rep.KeyedFromSeq)
	}

	pinned := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: key, SignedFrom: 1}))
	rep, err = pinned.VerifyAudit(ctx, store.VerifyFull)
	wantBroken(t, rep, err, 1, "not signed, but every entry from seq 1 must be")
}

// TestAuditKeyRotation: one signing key per control plane, several
// verification keys; entries record the key that signed them.
func TestAuditKeyRotation(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	db := newDatabase(t)
	ctx := ctxT(t, time.Minute)
	// Step 1: every control plane signs with k1.
	a := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: k1}))
	if _, _, err := a.Seed(ctx, "seed", testPolicy(t, "acme")); err != nil {
		t.Fatal(err)
	}
	// Step 2: every control plane accepts k2 (a still signs with k1).
	a.Close()
	a = openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: k1, Verification: []*auditkey.VerificationKey{k2.Public()}}))
	// Step 3: control planes switch to k2 one by one, keeping k1 to verify
	// the older entries; meanwhile a and b write in turn.
	b := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: k2, Verification: []*auditkey.VerificationKey{k1.Public()}}))
	for i, s := range []*store.Store{a, b, a, b} {
		if _, err := s.SetSuspended(ctx, "ops", "acme", i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	page, err := a.Audit(ctx, store.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range page.Entries {
		ids = append(ids, e.KeyID)
		if len(e.Signature) != 64 {
			t.Errorf("seq %d: a %d-byte signature", e.Seq, len(e.Signature))
		}
	}
	if want := []string{k1.ID(), k1.ID(), k2.ID(), k1.ID(), k2.ID()}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("key ids %v, want %v", ids, want)
	}
	for _, s := range []*store.Store{a, b} {
		rep, err := s.VerifyAudit(ctx, store.VerifyFull)
		wantVerified(t, rep, err, 5)
	}
	// Step 4: k1's private half is gone; its public half still verifies.
	// A verifier without it cannot tell k1's entries from forgeries.
	c := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: k2}))
	rep, err := c.VerifyAudit(ctx, store.VerifyFull)
	wantBroken(t, rep, err, 1, "signed with key \""+k1.ID()+"\", which is not among the audit verification keys")
	d := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Verification: []*auditkey.VerificationKey{k1.Public(), k2.Public()}}))
	rep, err = d.VerifyAudit(ctx, store.VerifyFull)
	wantVerified(t, rep, err, 5)
	// A control plane that only verifies does not write unsigned entries
	// after signed ones: nothing is written.
	if _, err := d.SetSuspended(ctx, "ops", "acme", false); !errors.Is(err, store.ErrAuditKeyRequired) || !strings.Contains(err.Error(), k2.ID()) {
		t.Fatalf("write without the signing key: %v", err)
	}
	// An entry's key id swapped for the other key's no longer verifies.
	db.exec(t, `UPDATE tenantguard_cp.audit SET key_id = '`+k2.ID()+`' WHERE seq = 2`)
	rep, err = a.VerifyAudit(ctx, store.VerifyFull)
	wantBroken(t, rep, err, 2, "does not verify")
}

//go:embed testdata/store-v1.sql
var storeV1 string

// loadV1 fills db with the store the control plane wrote before audit
// keys (testdata/store-v1.sql: five entries, schema migration 1).
func loadV1(t *testing.T, db *database) {
	t.Helper()
	db.exec(t, storeV1)
}

func hashes(t *testing.T, ctx context.Context, db *database) [][]byte {
	t.Helper()
	conn := audittest.Connect(t, ctx, db.url)
	rows, err := conn.Query(ctx, `SELECT hash FROM tenantguard_cp.audit ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

// TestAuditUpgradeOldStore: a store written before audit keys is upgraded
// in place. Its entries stay as they were and verify by hash; new ones are
// signed; the first signed entry pins the unsigned ones before it from
// then on.
func TestAuditUpgradeOldStore(t *testing.T) {
	key := newKey(t)
	db := newDatabase(t)
	ctx := ctxT(t, time.Minute)
	loadV1(t, db)
	before := hashes(t, ctx, db)
	keys := store.WithAuditKeys(store.AuditKeys{Signing: key})
	s := openStore(t, db, keys)
	rep, err := s.VerifyAudit(ctx, store.VerifyIncremental)
	wantVerified(t, rep, err, 5)
	if rep.Mode != store.VerifyFull || rep.KeyedFromSeq != 0 || !rep.SignaturesChecked {
		t.Fatalf("old store: %+v", rep)
	}
	for range 2 {
		if _, err := s.Put(ctx, "alice", "after the upgrade", testPolicy(t, "acme", "globex")); err != nil {
			t.Fatal(err)
		}
	}
	rep, err = s.VerifyAudit(ctx, store.VerifyIncremental)
	wantVerified(t, rep, err, 7)
	if rep.Mode != store.VerifyIncremental || rep.Checked != 2 || rep.KeyedFromSeq != 6 {
		t.Fatalf("after two signed writes: %+v", rep)
	}
	after := hashes(t, ctx, db)
	for i := range before {
		if !bytes.Equal(before[i], after[i]) {
			t.Fatalf("seq %d's hash changed in the upgrade", i+1)
		}
	}
	page, err := s.Audit(ctx, store.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Entries {
		if (e.KeyID == "") != (e.Seq <= 5) {
			t.Errorf("seq %d key id %q", e.Seq, e.KeyID)
		}
	}
	restore := db.save(t)

	t.Run("unsigned entry rewritten", func(t *testing.T) {
		restore()
		forge(t, db, 2)
		rep, err := openStore(t, db, keys).VerifyAudit(ctx, store.VerifyFull)
		wantBroken(t, rep, err, 6, "the entry, or an unsigned one before it, was rewritten")
	})
	t.Run("signatures stripped, then an entry rewritten", func(t *testing.T) {
		restore()
		stripSignatures(t, db, 6)
		forge(t, db, 2)
		rep, err := s.VerifyAudit(ctx, store.VerifyFull) // remembers seq 6
		wantBroken(t, rep, err, 6, "not signed, but every entry from seq 6 must be")
		rep, err = openStore(t, db, keys).VerifyAudit(ctx, store.VerifyFull)
		wantVerified(t, rep, err, 7) // what audit_signed_from is for
		pinned := openStore(t, db, store.WithAuditKeys(store.AuditKeys{Signing: key, SignedFrom: 6}))
		rep, err = pinned.VerifyAudit(ctx, store.VerifyFull)
		wantBroken(t, rep, err, 6, "not signed, but every entry from seq 6 must be")
	})
	t.Run("a control plane without the key", func(t *testing.T) {
		restore()
		unkeyed := openStore(t, db)
		rep, err := unkeyed.VerifyAudit(ctx, store.VerifyFull)
		wantVerified(t, rep, err, 7)
		if rep.SignaturesChecked || rep.KeyedFromSeq != 6 {
			t.Fatalf("%+v", rep)
		}
		if _, err := unkeyed.Put(ctx, "alice", "", testPolicy(t, "acme")); !errors.Is(err, store.ErrAuditKeyRequired) {
			t.Fatalf("unsigned write after signed entries: %v", err)
		}
		if cur, _ := unkeyed.Current(ctx); cur.Version != 7 {
			t.Fatalf("version %d written", cur.Version)
		}
	})
}
