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
	Action  string // ActionPut, ActionRollback, ActionSuspend, ActionResume, ActionSeed, ActionPlace, ActionAddTenant, ActionRemoveTenant, ActionOperation
	Version int64  // the version the change wrote; for ActionOperation, the version current then
	// Detail is the entry's detail object in canonical JSON: for a policy
	// change always policy_sha256, diff_sha256, comment and parent;
	// rollback_to for a rollback; tenant for suspend and resume; tenant
	// and operation for add_tenant and remove_tenant. An operation entry
	// has only its own fields: operation, kind, tenant, event ("start" or
	// "end") and what the operation records (params at the start; state,
	// error and result at the end).
	Detail   json.RawMessage
	PrevHash []byte // the previous entry's Hash; 32 zero bytes for seq 1
	Hash     []byte
	// KeyID names the audit key (auditkey.KeyID) whose Ed25519 Signature
	// of the hash the entry carries; both are empty for an entry written
	// without a signing key (before one was configured).
	KeyID     string
	Signature []byte
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

// ErrCursorMismatch: the entry an AuditQuery's cursor names no longer has
// the hash it had when it was read. History is append-only, so the audit
// trail was altered in between.
var ErrCursorMismatch = errors.New("the audit entry the cursor names has changed")

// AuditQuery selects a page of the audit trail.
type AuditQuery struct {
	// Limit is the most entries to return: DefaultAuditLimit when 0 or
	// less, at most MaxAuditLimit.
	Limit int
	// After: return entries with a greater seq, oldest first.
	After int64
	// AfterHash, if set, is the hash entry After had when the caller read
	// it (a cursor): Audit fails with ErrCursorMismatch unless it still
	// has it, so that pages read one after another are one chain.
	AfterHash []byte
}

// AuditPage is one page of the audit trail.
type AuditPage struct {
	Entries []AuditEntry
	// More says there are entries after the last one returned.
	More bool
}

// auditColumns are the columns scanAuditEntry reads, in its order.
const auditColumns = `seq, at, actor, action, version, detail::text, prev_hash, hash, coalesce(key_id, ''), signature`

// Audit returns a page of audit entries, oldest first, reading at most
// Limit+2 rows whatever the trail's length. Detail is returned in
// canonical JSON. Audit does not verify the entries: VerifyAudit does.
func (s *Store) Audit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	limit = min(limit, MaxAuditLimit)
	from, n := q.After+1, limit+1 // one row more says whether there are more
	if q.AfterHash != nil {
		from, n = q.After, n+1 // the cursor's own entry too, to compare its hash
	}
	rows, err := s.pool.Query(ctx, `SELECT `+auditColumns+`
		FROM tenantguard_cp.audit WHERE seq >= $1 ORDER BY seq LIMIT $2`, from, n)
	if err != nil {
		return AuditPage{}, fmt.Errorf("store: audit: %w", err)
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEntry, error) {
		e, err := scanAuditEntry(row)
		if err != nil {
			return e, err
		}
		c, err := canonicalize(e.Detail)
		if err != nil {
			return e, fmt.Errorf("seq %d detail: %w", e.Seq, err)
		}
		e.Detail = c
		return e, nil
	})
	if err != nil {
		return AuditPage{}, fmt.Errorf("store: audit: %w", err)
	}
	if q.AfterHash != nil {
		if len(entries) == 0 || entries[0].Seq != q.After || !bytes.Equal(entries[0].Hash, q.AfterHash) {
			return AuditPage{}, fmt.Errorf("store: audit: %w (seq %d)", ErrCursorMismatch, q.After)
		}
		entries = entries[1:]
	}
	page := AuditPage{Entries: entries}
	if len(entries) > limit {
		page.Entries, page.More = entries[:limit], true
	}
	return page, nil
}

// scanAuditEntry reads auditColumns; Detail is the text PostgreSQL gave.
func scanAuditEntry(row pgx.Row) (AuditEntry, error) {
	var e AuditEntry
	var detail string
	if err := row.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Version, &detail, &e.PrevHash, &e.Hash, &e.KeyID, &e.Signature); err != nil {
		return e, err
	}
	e.At = e.At.UTC()
	e.Detail = json.RawMessage(detail)
	return e, nil
}
