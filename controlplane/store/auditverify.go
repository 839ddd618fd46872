package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
)

// VerifyMode says how much of the audit chain VerifyAudit reads.
type VerifyMode int

const (
	// VerifyIncremental reads only the checkpoint's entry (the chain's end
	// when a verification last passed) and the entries after it; with no
	// checkpoint yet it verifies in full. It detects any change to entries
	// written since, to the checkpoint's entry and to the chain's end, but
	// not a change to an entry before the checkpoint.
	VerifyIncremental VerifyMode = iota
	// VerifyFull reads the whole chain from seq 1, and checks that it
	// still passes through the checkpoint (same seq, same hash).
	VerifyFull
)

func (m VerifyMode) String() string {
	if m == VerifyFull {
		return "full"
	}
	return "incremental"
}

// AuditReport is what a VerifyAudit call did and what this Store knows of
// the chain afterwards.
type AuditReport struct {
	// Mode is what ran: VerifyIncremental runs VerifyFull when there is no
	// checkpoint yet.
	Mode VerifyMode
	// Checked is how many entries this call verified (for an incremental
	// one, those after the checkpoint); when it found a problem, how many
	// verified before it.
	Checked int
	// VerifiedSeq is the checkpoint: the chain verified from seq 1 up to
	// this entry (0 when nothing has verified yet, or the chain is empty).
	VerifiedSeq int64
	// KeyedFromSeq is the first signed entry (0: none is). Entries before
	// it were written before the control plane had an audit key: their
	// own content is covered only by the hash chain, which the signature
	// of entry KeyedFromSeq (over its hash, which covers its predecessor's
	// hash) pins from the time that entry was written.
	KeyedFromSeq int64
	// SignaturesChecked says whether the Store has verification keys; if
	// not, signed entries verify by hash alone.
	SignaturesChecked bool
	// LastFull is when a full verification last passed in this process
	// (zero: not yet).
	LastFull time.Time
}

// auditState is what VerifyAudit remembers between calls.
type auditState struct {
	// sem lets one verification run at a time; the fields below change
	// only while it is held, and mu guards reading them from elsewhere.
	sem chan struct{}
	mu  sync.Mutex

	cp            *auditCheckpoint // nil: none yet
	keyedFrom     int64            // the first signed entry, as verified; 0: none seen
	broken        *AuditError      // the last problem found, until a full verification passes
	lastFull      time.Time        // a full verification last passed
	checked       bool             // any verification has completed (verified or broken)
	lastCheck     time.Time        // a verification last completed, or the Store was opened
	lastFullCheck time.Time        // a full verification last completed, or the Store was opened
}

// auditCheckpoint is the chain's end as the last passing verification
// found it.
type auditCheckpoint struct {
	seq, version int64
	hash         []byte
}

// VerifyAudit verifies the audit chain in one consistent snapshot: each
// entry's content against its hash, its link to the entry before it, its
// signature, and the version it wrote (policy body, diff, author, time,
// comment, parent); then that the chain ends where the head row says and
// that no version lacks an entry. mode says from where (see VerifyMode).
//
// A problem is an *AuditError (errors.Is ErrTampered) naming the first bad
// seq: an entry altered (its content no longer matches its hash, or its
// hash no longer matches its signature), deleted or inserted (a gap in seq,
// a broken prev_hash link), signed by a key that is not a verification key,
// unsigned after the chain is signed (or from the configured
// audit_signed_from seq on), a version altered or without an entry, or the
// newest entries missing. Once found, a problem is reported by every later
// call, incremental ones included, until a full verification passes. Other
// errors mean it could not check.
//
// Without verification keys the chain detects changes by anyone who does
// not also recompute every later hash and the head row, and, while this
// Store runs, any change up to its checkpoint. With them, such a rewrite
// breaks the signature of the first signed entry at or after the change.
// Deleting the newest entries together with the head row (a restore of an
// older backup does that) is detected against the checkpoint of a running
// Store, and otherwise only against the audit_hash values logged at each
// write.
func (s *Store) VerifyAudit(ctx context.Context, mode VerifyMode) (AuditReport, error) {
	a := &s.audit
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return AuditReport{}, fmt.Errorf("store: verify audit: %w", ctx.Err())
	}
	defer func() { <-a.sem }()
	if a.cp == nil {
		mode = VerifyFull
	}
	w, bad, err := s.walkChain(ctx, mode)
	if err != nil {
		s.auditChecks.WithLabelValues(mode.String(), "error").Inc()
		return s.auditReport(mode, w), err
	}
	now := time.Now()
	a.mu.Lock()
	a.checked, a.lastCheck = true, now
	if mode == VerifyFull {
		a.lastFullCheck = now
	}
	if bad != nil {
		a.broken = bad
	} else {
		a.cp = &auditCheckpoint{seq: w.seq, version: w.version, hash: w.hash}
		if w.keyedFrom != 0 && (a.keyedFrom == 0 || w.keyedFrom < a.keyedFrom) {
			a.keyedFrom = w.keyedFrom
		}
		if mode == VerifyFull {
			a.broken, a.lastFull = nil, now
		}
	}
	broken := a.broken
	a.mu.Unlock()
	rep := s.auditReport(mode, w)
	if broken != nil {
		s.auditChecks.WithLabelValues(mode.String(), "broken").Inc()
		return rep, broken
	}
	s.auditChecks.WithLabelValues(mode.String(), "ok").Inc()
	return rep, nil
}

func (s *Store) auditReport(mode VerifyMode, w *chainWalk) AuditReport {
	a := &s.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	rep := AuditReport{Mode: mode, KeyedFromSeq: a.keyedFrom, SignaturesChecked: s.auditKeys != nil, LastFull: a.lastFull}
	if w != nil {
		rep.Checked = w.checked
	}
	if a.cp != nil {
		rep.VerifiedSeq = a.cp.seq
	}
	return rep
}

// auditDetail is what VerifyAudit reads from an entry's detail.
type auditDetail struct {
	PolicySHA256 string       `json:"policy_sha256"`
	DiffSHA256   string       `json:"diff_sha256"`
	Comment      string       `json:"comment"`
	Parent       *json.Number `json:"parent"`
}

// walkChain verifies the chain from seq 1 (full) or from the checkpoint,
// holding the verification semaphore. It returns the walk's end and the
// first problem, or an error when it could not check.
func (s *Store) walkChain(ctx context.Context, mode VerifyMode) (*chainWalk, *AuditError, error) {
	a := &s.audit
	w := &chainWalk{keys: s.auditKeys, hash: genesisHash, signedFrom: s.auditSignedFrom}
	if a.keyedFrom != 0 && (w.signedFrom == 0 || a.keyedFrom < w.signedFrom) {
		// Once seen signed, entries stay signed: stripping the signatures
		// of the whole chain would otherwise pass for a store never keyed.
		w.signedFrom = a.keyedFrom
	}
	from := int64(1)
	recheck := false
	if mode == VerifyIncremental {
		w.seq, w.version, w.hash, w.keyedFrom = a.cp.seq, a.cp.version, a.cp.hash, a.keyedFrom
		from, recheck = a.cp.seq, a.cp.seq > 0
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return w, nil, fmt.Errorf("store: verify audit: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The walk must read only the entries from `from` on, one version per
	// entry by its key, whatever the statistics say: without statistics (a
	// table just bulk-loaded) the planner takes seq >= $1 to match a third
	// of the rows and hashes the whole versions table, policy bodies and
	// all, to verify one new entry. With only index scans and nested loops
	// left, the plan streams both primary keys in seq order.
	if _, err := tx.Exec(ctx, `SELECT set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true),
		set_config('enable_mergejoin', 'off', true), set_config('enable_sort', 'off', true)`); err != nil {
		return w, nil, fmt.Errorf("store: verify audit: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT a.seq, a.at, a.actor, a.action, a.version, a.detail::text, a.prev_hash, a.hash,
			coalesce(a.key_id, ''), a.signature,
			v.version IS NOT NULL, v.policy::text, v.author, v.created_at, v.comment, v.diff, v.parent
		FROM tenantguard_cp.audit a LEFT JOIN tenantguard_cp.versions v ON v.version = a.version
		WHERE a.seq >= $1 ORDER BY a.seq`, from)
	if err != nil {
		return w, nil, fmt.Errorf("store: verify audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e AuditEntry
		var detail string
		var vr versionRow
		if err := rows.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Version, &detail, &e.PrevHash, &e.Hash, &e.KeyID, &e.Signature,
			&vr.exists, &vr.policy, &vr.author, &vr.createdAt, &vr.comment, &vr.diff, &vr.parent); err != nil {
			return w, nil, fmt.Errorf("store: verify audit: %w", err)
		}
		e.Detail = json.RawMessage(detail)
		if recheck {
			recheck = false
			if bad := w.recheck(&e, &vr); bad != nil {
				return w, bad, nil
			}
			continue
		}
		if bad := w.step(&e, &vr); bad != nil {
			return w, bad, nil
		}
		// A full walk passes the checkpoint too: what was verified then
		// must still be there. Without this, a full check would accept
		// history rewritten (without a key) or cut short below the
		// checkpoint, and clear the problem an incremental check found.
		if cp := a.cp; mode == VerifyFull && cp != nil && e.Seq == cp.seq && !bytes.Equal(e.Hash, cp.hash) {
			return w, &AuditError{Seq: e.Seq, Version: e.Version, Reason: "altered: the entry's hash differs from the one verified earlier"}, nil
		}
	}
	if err := rows.Err(); err != nil {
		return w, nil, fmt.Errorf("store: verify audit: %w", err)
	}
	if recheck {
		return w, &AuditError{Seq: w.seq, Version: w.version, Reason: "missing: the entry, verified earlier, is gone"}, nil
	}
	if mode == VerifyFull && a.cp != nil && w.seq < a.cp.seq {
		return w, &AuditError{Seq: w.seq + 1, Reason: fmt.Sprintf("missing: the chain ends at seq %d, but was verified up to seq %d earlier", w.seq, a.cp.seq)}, nil
	}
	bad, err := w.checkEnd(ctx, tx)
	return w, bad, err
}

// chainWalk is a verification's position in the chain.
type chainWalk struct {
	keys auditkey.Set // nil: signatures are not checked
	// signedFrom: entries from this seq on must be signed (0: only those
	// after the first signed one).
	signedFrom int64

	seq, version int64  // the last entry verified; 0 at the start
	hash         []byte // its hash
	keyedFrom    int64  // the first signed entry seen; 0: none
	checked      int
}

// step verifies the next entry and moves past it.
func (w *chainWalk) step(e *AuditEntry, vr *versionRow) *AuditError {
	if reason, ok := verifyEntry(e, w.seq, w.version, w.hash, vr); !ok {
		seq := e.Seq
		if e.Seq != w.seq+1 {
			seq = w.seq + 1
		}
		return &AuditError{Seq: seq, Version: e.Version, Reason: reason}
	}
	if reason, ok := w.verifySignature(e); !ok {
		return &AuditError{Seq: e.Seq, Version: e.Version, Reason: reason}
	}
	if e.KeyID != "" && w.keyedFrom == 0 {
		w.keyedFrom = e.Seq
	}
	w.checked++
	w.seq, w.version, w.hash = e.Seq, e.Version, e.Hash
	return nil
}

// recheck verifies the checkpoint's own entry again: still there, still
// the hash verified then, its content, signature and version still
// matching it.
func (w *chainWalk) recheck(e *AuditEntry, vr *versionRow) *AuditError {
	if e.Seq != w.seq {
		return &AuditError{Seq: w.seq, Version: w.version, Reason: "missing: the entry, verified earlier, is gone"}
	}
	if !bytes.Equal(e.Hash, w.hash) {
		return &AuditError{Seq: e.Seq, Version: e.Version, Reason: "altered: the entry's hash differs from the one verified earlier"}
	}
	if e.Version != w.version {
		return &AuditError{Seq: e.Seq, Version: e.Version, Reason: fmt.Sprintf("altered: the entry now names version %d, not %d", e.Version, w.version)}
	}
	// Its link backwards was verified with it; check the rest as step does.
	prevVersion := w.version - 1
	if e.Action == ActionOperation {
		prevVersion = w.version
	}
	if reason, ok := verifyEntry(e, e.Seq-1, prevVersion, e.PrevHash, vr); !ok {
		return &AuditError{Seq: e.Seq, Version: e.Version, Reason: reason}
	}
	if reason, ok := w.verifySignature(e); !ok {
		return &AuditError{Seq: e.Seq, Version: e.Version, Reason: reason}
	}
	return nil
}

// verifySignature checks an entry's signature, or that it may be unsigned.
func (w *chainWalk) verifySignature(e *AuditEntry) (string, bool) {
	if e.KeyID == "" {
		switch {
		case w.keyedFrom != 0 && e.Seq > w.keyedFrom:
			return fmt.Sprintf("not signed, but the chain is signed from seq %d", w.keyedFrom), false
		case w.signedFrom != 0 && e.Seq >= w.signedFrom:
			return fmt.Sprintf("not signed, but every entry from seq %d must be", w.signedFrom), false
		}
		return "", true
	}
	if w.keys == nil {
		return "", true // no keys to check with: by hash alone
	}
	k := w.keys[e.KeyID]
	if k == nil {
		return fmt.Sprintf("signed with key %.40q, which is not among the audit verification keys", e.KeyID), false
	}
	if !k.VerifyEntry(e.Hash, e.Signature) {
		if (w.keyedFrom == 0 || w.keyedFrom == e.Seq) && e.Seq > 1 {
			return fmt.Sprintf("the signature (key %s) does not verify: the entry, or an unsigned one before it, was rewritten", e.KeyID), false
		}
		return fmt.Sprintf("the signature (key %s) does not verify: the entry was rewritten", e.KeyID), false
	}
	return "", true
}

// checkEnd compares the walk's end with the head row and looks for
// versions after it.
func (w *chainWalk) checkEnd(ctx context.Context, tx pgx.Tx) (*AuditError, error) {
	var headVersion, headSeq int64
	var headHash []byte
	if err := tx.QueryRow(ctx, `SELECT version, audit_seq, audit_hash FROM tenantguard_cp.head WHERE id = 1`).
		Scan(&headVersion, &headSeq, &headHash); err != nil {
		return nil, fmt.Errorf("store: verify audit: head: %w", err)
	}
	switch {
	case headSeq > w.seq:
		return &AuditError{Seq: w.seq + 1, Reason: fmt.Sprintf("missing: the chain ends at seq %d but was written up to seq %d", w.seq, headSeq)}, nil
	case headSeq < w.seq:
		return &AuditError{Seq: headSeq + 1, Reason: fmt.Sprintf("not written by a control plane: the chain was written up to seq %d", headSeq)}, nil
	case !bytes.Equal(headHash, w.hash):
		return &AuditError{Seq: w.seq, Reason: "the newest entry's hash differs from the one recorded when it was written"}, nil
	case headVersion != w.version:
		return &AuditError{Version: headVersion, Reason: fmt.Sprintf("the head records version %d, the audit trail ends at version %d", headVersion, w.version)}, nil
	}
	var orphan int64
	err := tx.QueryRow(ctx, `SELECT version FROM tenantguard_cp.versions WHERE version > $1 ORDER BY version LIMIT 1`, w.version).Scan(&orphan)
	switch {
	case err == nil:
		return &AuditError{Version: orphan, Reason: "the version has no audit entry"}, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("store: verify audit: %w", err)
	}
	return nil, nil
}

// versionRow is a version as VerifyAudit reads it; the pointers are nil
// when the version row is missing.
type versionRow struct {
	exists    bool
	policy    *string
	author    *string
	createdAt *time.Time
	comment   *string
	diff      *string
	parent    *int64
}

// verifyEntry checks one entry against its predecessor and its version.
func verifyEntry(e *AuditEntry, lastSeq, lastVersion int64, lastHash []byte, vr *versionRow) (string, bool) {
	if e.Seq != lastSeq+1 {
		return fmt.Sprintf("missing: the entry after seq %d is seq %d", lastSeq, e.Seq), false
	}
	if !bytes.Equal(e.PrevHash, lastHash) {
		return "prev_hash does not link to the previous entry's hash", false
	}
	sum, err := e.computeHash()
	if err != nil {
		return fmt.Sprintf("cannot hash the entry: %v", err), false
	}
	if !bytes.Equal(sum, e.Hash) {
		return "altered: the entry's content does not match its hash", false
	}
	if e.Action == ActionOperation {
		// A lifecycle operation's start or end writes no version: it
		// names the one current when it was written.
		if e.Version != lastVersion {
			return fmt.Sprintf("operation entry names version %d, but version %d was current", e.Version, lastVersion), false
		}
		return "", true
	}
	if e.Version != lastVersion+1 {
		return fmt.Sprintf("version %d out of sequence after version %d", e.Version, lastVersion), false
	}
	if !vr.exists {
		return fmt.Sprintf("version %d is missing", e.Version), false
	}
	var d auditDetail
	if err := json.Unmarshal(e.Detail, &d); err != nil {
		return fmt.Sprintf("unreadable detail: %v", err), false
	}
	policySum, err := bodySHA256(*vr.policy)
	if err != nil {
		return fmt.Sprintf("version %d policy body unreadable: %v", e.Version, err), false
	}
	var body struct {
		Version string `json:"version"`
	}
	_ = json.Unmarshal([]byte(*vr.policy), &body)
	wantParent := ""
	if d.Parent != nil {
		wantParent = d.Parent.String()
	}
	gotParent := ""
	if vr.parent != nil {
		gotParent = fmt.Sprint(*vr.parent)
	}
	switch {
	case policySum != d.PolicySHA256:
		return fmt.Sprintf("version %d policy body altered", e.Version), false
	case body.Version != versionString(e.Version):
		return fmt.Sprintf("version %d policy body names version %q", e.Version, body.Version), false
	case textSHA256(*vr.diff) != d.DiffSHA256:
		return fmt.Sprintf("version %d diff altered", e.Version), false
	case *vr.author != e.Actor:
		return fmt.Sprintf("version %d author differs from the entry's actor", e.Version), false
	case !vr.createdAt.Equal(e.At):
		return fmt.Sprintf("version %d created_at differs from the entry's time", e.Version), false
	case *vr.comment != d.Comment:
		return fmt.Sprintf("version %d comment altered", e.Version), false
	case gotParent != wantParent:
		return fmt.Sprintf("version %d parent altered", e.Version), false
	}
	return "", true
}
