package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditEntry is one row of the audit trail: one change, who made it, and
// its link in the hash chain (see the package documentation for the exact
// encoding).
type AuditEntry struct {
	Seq     int64
	At      time.Time // UTC, microseconds
	Actor   string
	Action  string // ActionPut, ActionRollback, ActionSuspend, ActionResume, ActionSeed
	Version int64  // the version the change wrote
	// Detail is the entry's detail object in canonical JSON: always
	// policy_sha256, diff_sha256, comment and parent; rollback_to for a
	// rollback; tenant for suspend and resume.
	Detail   json.RawMessage
	PrevHash []byte // the previous entry's Hash; 32 zero bytes for seq 1
	Hash     []byte
}

// ErrTampered: VerifyAudit found the audit trail or a version altered
// (an *AuditError says where).
var ErrTampered = errors.New("audit trail does not verify")

// AuditError is what VerifyAudit found wrong first.
type AuditError struct {
	// Seq is the first audit entry that does not verify: altered, missing
	// (deleted), or out of place (inserted); 0 when the problem is a
	// version without an audit entry.
	Seq int64
	// Version is the version concerned, when there is one.
	Version int64
	Reason  string
}

func (e *AuditError) Error() string {
	switch {
	case e.Seq > 0:
		return fmt.Sprintf("audit trail does not verify at seq %d: %s", e.Seq, e.Reason)
	case e.Version > 0:
		return fmt.Sprintf("audit trail does not verify at version %d: %s", e.Version, e.Reason)
	}
	return "audit trail does not verify: " + e.Reason
}

// Is makes errors.Is(err, ErrTampered) hold.
func (e *AuditError) Is(target error) bool { return target == ErrTampered }

// genesisHash is the prev_hash of the first entry.
var genesisHash = make([]byte, sha256.Size)

// hashInput is the byte string the entry's hash is the SHA-256 of: the
// canonical JSON of
//
//	[seq, at, actor, action, version, detail, prev_hash]
//
// with at in UTC as Go's time.RFC3339Nano writes it, detail the detail
// object and prev_hash in lower-case hex.
func (e *AuditEntry) hashInput() ([]byte, error) {
	detail, err := decodeJSON(e.Detail)
	if err != nil {
		return nil, fmt.Errorf("detail: %w", err)
	}
	return canonicalJSON([]any{e.Seq, e.At.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.Version, detail, hex.EncodeToString(e.PrevHash)})
}

func (e *AuditEntry) computeHash() ([]byte, error) {
	in, err := e.hashInput()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(in)
	return sum[:], nil
}

// Bounds of Audit's limit.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// Audit returns up to limit audit entries with seq greater than afterSeq,
// oldest first. A limit of 0 or less means DefaultAuditLimit; it is capped
// at MaxAuditLimit. Detail is returned in canonical JSON.
func (s *Store) Audit(ctx context.Context, limit int, afterSeq int64) ([]AuditEntry, error) {
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	limit = min(limit, MaxAuditLimit)
	rows, err := s.pool.Query(ctx, `SELECT seq, at, actor, action, version, detail::text, prev_hash, hash
		FROM tenantguard_cp.audit WHERE seq > $1 ORDER BY seq LIMIT $2`, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("store: audit: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		var detail string
		if err := row.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Version, &detail, &e.PrevHash, &e.Hash); err != nil {
			return e, err
		}
		e.At = e.At.UTC()
		c, err := canonicalize([]byte(detail))
		if err != nil {
			return e, fmt.Errorf("seq %d detail: %w", e.Seq, err)
		}
		e.Detail = c
		return e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: audit: %w", err)
	}
	return out, nil
}

// auditDetail is what VerifyAudit reads from an entry's detail.
type auditDetail struct {
	PolicySHA256 string       `json:"policy_sha256"`
	DiffSHA256   string       `json:"diff_sha256"`
	Comment      string       `json:"comment"`
	Parent       *json.Number `json:"parent"`
}

// VerifyAudit recomputes the audit chain from its first entry in one
// consistent snapshot and checks each version against the entry that wrote
// it. It returns how many entries verified and, for the first problem, an
// *AuditError (errors.Is ErrTampered) naming the seq: an entry whose
// content no longer matches its hash (altered), a gap in seq or a broken
// prev_hash link (deleted or inserted), a version whose policy body,
// diff, author, time, comment or parent differ from what its entry
// recorded, a version with no entry, or newest entries missing (the head
// row records the chain's end). Other errors mean it could not check.
//
// The chain detects changes by anyone who does not also recompute every
// later hash and the head row; the hashes logged at each write ("policy
// version stored", audit_hash) anchor it outside the database.
func (s *Store) VerifyAudit(ctx context.Context) (int, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("store: verify audit: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	checked, lastSeq, lastVersion, lastHash, err := verifyEntries(ctx, tx)
	if err != nil {
		return checked, err
	}
	var headVersion, headSeq int64
	var headHash []byte
	if err := tx.QueryRow(ctx, `SELECT version, audit_seq, audit_hash FROM tenantguard_cp.head WHERE id = 1`).
		Scan(&headVersion, &headSeq, &headHash); err != nil {
		return checked, fmt.Errorf("store: verify audit: head: %w", err)
	}
	switch {
	case headSeq > lastSeq:
		return checked, &AuditError{Seq: lastSeq + 1, Reason: fmt.Sprintf("missing: the chain ends at seq %d but was written up to seq %d", lastSeq, headSeq)}
	case headSeq < lastSeq:
		return checked, &AuditError{Seq: headSeq + 1, Reason: fmt.Sprintf("not written by a control plane: the chain was written up to seq %d", headSeq)}
	case !bytes.Equal(headHash, lastHash):
		return checked, &AuditError{Seq: lastSeq, Reason: "the newest entry's hash differs from the one recorded when it was written"}
	case headVersion != lastVersion:
		return checked, &AuditError{Version: headVersion, Reason: fmt.Sprintf("the head records version %d, the audit trail ends at version %d", headVersion, lastVersion)}
	}
	var orphan int64
	err = tx.QueryRow(ctx, `SELECT version FROM tenantguard_cp.versions WHERE version > $1 ORDER BY version LIMIT 1`, lastVersion).Scan(&orphan)
	switch {
	case err == nil:
		return checked, &AuditError{Version: orphan, Reason: "the version has no audit entry"}
	case !errors.Is(err, pgx.ErrNoRows):
		return checked, fmt.Errorf("store: verify audit: %w", err)
	}
	return checked, nil
}

// verifyEntries walks the chain in seq order with each entry's version
// row, returning how many entries verified and the last seq, version and
// hash.
func verifyEntries(ctx context.Context, tx pgx.Tx) (checked int, lastSeq, lastVersion int64, lastHash []byte, err error) {
	rows, err := tx.Query(ctx, `SELECT a.seq, a.at, a.actor, a.action, a.version, a.detail::text, a.prev_hash, a.hash,
			v.version IS NOT NULL, v.policy::text, v.author, v.created_at, v.comment, v.diff, v.parent
		FROM tenantguard_cp.audit a LEFT JOIN tenantguard_cp.versions v ON v.version = a.version
		ORDER BY a.seq`)
	if err != nil {
		return 0, 0, 0, nil, fmt.Errorf("store: verify audit: %w", err)
	}
	defer rows.Close()
	lastHash = genesisHash
	for rows.Next() {
		var e AuditEntry
		var detail string
		var vr versionRow
		if err := rows.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Version, &detail, &e.PrevHash, &e.Hash,
			&vr.exists, &vr.policy, &vr.author, &vr.createdAt, &vr.comment, &vr.diff, &vr.parent); err != nil {
			return checked, lastSeq, lastVersion, lastHash, fmt.Errorf("store: verify audit: %w", err)
		}
		e.Detail = json.RawMessage(detail)
		if reason, ok := verifyEntry(&e, lastSeq, lastVersion, lastHash, &vr); !ok {
			seq := e.Seq
			if e.Seq != lastSeq+1 {
				seq = lastSeq + 1
			}
			return checked, lastSeq, lastVersion, lastHash, &AuditError{Seq: seq, Version: e.Version, Reason: reason}
		}
		checked++
		lastSeq, lastVersion, lastHash = e.Seq, e.Version, e.Hash
	}
	if err := rows.Err(); err != nil {
		return checked, lastSeq, lastVersion, lastHash, fmt.Errorf("store: verify audit: %w", err)
	}
	return checked, lastSeq, lastVersion, lastHash, nil
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
