package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Audit actions, the audit table's action column.
const (
	ActionPut      = "put"
	ActionRollback = "rollback"
	ActionSuspend  = "suspend"
	ActionResume   = "resume"
	ActionSeed     = "seed"
	ActionPlace    = "place"
	// ActionAddTenant and ActionRemoveTenant are a lifecycle operation's
	// policy changes (detail: tenant, operation).
	ActionAddTenant    = "add_tenant"
	ActionRemoveTenant = "remove_tenant"
	// ActionOperation is a lifecycle operation's start or end. It writes
	// no version: its entry names the version current when it was
	// written (detail: operation, kind, tenant, event and what the
	// operation reports).
	ActionOperation = "operation"
	// ActionPause is a tenant's paused flag set or cleared (a move holds
	// its transactions at the switch), with its placement when that
	// changes in the same version.
	ActionPause = "pause"
)

// Bounds of the free text a writer supplies.
const (
	maxAuthorLen  = 256
	maxCommentLen = 4096
)

// change is what one write stores: a new policy, why, and the action's
// own audit detail fields. A change without a policy (ActionOperation)
// writes only its audit entry, whose detail is detail alone; inTx, if
// set, runs in the same transaction before the entry is written (the
// entry's time is at), so the entry and what it records commit together.
type change struct {
	action  string
	comment string
	policy  *policypb.Policy
	detail  map[string]any
	inTx    func(tx pgx.Tx, at time.Time) error
}

// errSeeded tells Seed that the store already holds a version.
var errSeeded = errors.New("already seeded")

// Put stores p as the new current version, whatever the current version
// is. p is validated first (an *InvalidError naming the field); p's own
// version field is ignored and p is not changed.
func (s *Store) Put(ctx context.Context, author, comment string, p *policypb.Policy) (Version, error) {
	return s.put(ctx, author, comment, p, -1)
}

// PutIf is Put with optimistic concurrency: it stores p only if version
// expectParent is still the current one (0: only if the store is empty),
// else it returns a *ConflictError (errors.Is ErrConflict) and writes
// nothing.
func (s *Store) PutIf(ctx context.Context, author, comment string, p *policypb.Policy, expectParent int64) (Version, error) {
	if expectParent < 0 {
		return Version{}, &ConflictError{Expected: expectParent, Current: -1}
	}
	return s.put(ctx, author, comment, p, expectParent)
}

func (s *Store) put(ctx context.Context, author, comment string, p *policypb.Policy, expect int64) (Version, error) {
	if err := checkText(comment, maxCommentLen, true); err != nil {
		return Version{}, fmt.Errorf("%w: the comment %v", ErrBadText, err)
	}
	// Validate before taking the lock; write validates again with the
	// version number set, which Validate does not look at.
	if err := policypb.Validate(p); err != nil {
		return Version{}, &InvalidError{err}
	}
	return s.write(ctx, author, func(tx pgx.Tx, cur *Version) (*change, error) {
		var have int64
		if cur != nil {
			have = cur.Version
		}
		if expect >= 0 && have != expect {
			return nil, &ConflictError{Expected: expect, Current: have}
		}
		return &change{action: ActionPut, comment: comment, policy: p}, nil
	})
}

// Rollback stores, as a new version, the policy of version to (validated
// again: the rules may have changed since). ErrNotFound when there is no
// such version.
func (s *Store) Rollback(ctx context.Context, author string, to int64) (Version, error) {
	return s.write(ctx, author, func(tx pgx.Tx, cur *Version) (*change, error) {
		var old Version
		if cur != nil && cur.Version == to {
			old = *cur
		} else {
			var err error
			if old, err = getVersion(ctx, tx, to); err != nil {
				return nil, err
			}
		}
		return &change{
			action:  ActionRollback,
			comment: fmt.Sprintf("rollback to version %d", to),
			policy:  old.Policy,
			detail:  map[string]any{"rollback_to": to},
		}, nil
	})
}

// SetSuspended stores a new version in which tenant's suspended flag is
// suspended. ErrNotFound when the current policy has no such tenant
// (ErrEmpty when there is no policy). When the tenant is already in that
// state nothing is written: it returns the current version and
// ErrUnchanged.
func (s *Store) SetSuspended(ctx context.Context, author, tenant string, suspended bool) (Version, error) {
	action, verb := ActionResume, "resume"
	if suspended {
		action, verb = ActionSuspend, "suspend"
	}
	return s.write(ctx, author, func(tx pgx.Tx, cur *Version) (*change, error) {
		if cur == nil {
			return nil, ErrEmpty
		}
		p := proto.Clone(cur.Policy).(*policypb.Policy)
		var t *policypb.Tenant
		for _, x := range p.GetTenants() {
			if x.GetId() == tenant {
				t = x
				break
			}
		}
		if t == nil {
			return nil, fmt.Errorf("%w: tenant %q", ErrNotFound, tenant)
		}
		if t.Suspended == suspended {
			return nil, ErrUnchanged
		}
		t.Suspended = suspended
		return &change{
			action:  action,
			comment: fmt.Sprintf("%s tenant %s", verb, tenant),
			policy:  p,
			detail:  map[string]any{"tenant": tenant},
		}, nil
	})
}

// Placement names a tenant's clusters (policypb.Placement): "" is the
// default of that kind.
type Placement struct {
	Postgres string `json:"postgres"`
	Redis    string `json:"redis"`
}

// SetPlacement stores a new version in which tenant is placed on the
// clusters pl names: the one call that moves a tenant (the data must be
// where it is going first; sidecars send the tenant's next transactions
// there once those in flight finish). The audit entry (action "place")
// records the tenant, the new placement and the old. ErrNotFound when the
// current policy has no such tenant (ErrEmpty when there is no policy);
// ErrInvalid (a *policy.FieldError in the chain) when pl names no cluster
// of that kind; ErrUnchanged, writing nothing, when the tenant is placed
// so already.
func (s *Store) SetPlacement(ctx context.Context, author, tenant string, pl Placement) (Version, error) {
	return s.write(ctx, author, func(tx pgx.Tx, cur *Version) (*change, error) {
		if cur == nil {
			return nil, ErrEmpty
		}
		p := proto.Clone(cur.Policy).(*policypb.Policy)
		var t *policypb.Tenant
		for _, x := range p.GetTenants() {
			if x.GetId() == tenant {
				t = x
				break
			}
		}
		if t == nil {
			return nil, fmt.Errorf("%w: tenant %q", ErrNotFound, tenant)
		}
		from := Placement{Postgres: t.GetPlacement().GetPostgres(), Redis: t.GetPlacement().GetRedis()}
		if from == pl {
			return nil, ErrUnchanged
		}
		t.Placement = nil
		if pl != (Placement{}) {
			t.Placement = &policypb.Placement{Postgres: pl.Postgres, Redis: pl.Redis}
		}
		if err := policypb.Validate(p); err != nil {
			return nil, &InvalidError{err}
		}
		return &change{
			action:  ActionPlace,
			comment: fmt.Sprintf("place tenant %s on postgres %q, redis %q", tenant, pl.Postgres, pl.Redis),
			policy:  p,
			detail:  map[string]any{"tenant": tenant, "postgres": pl.Postgres, "redis": pl.Redis, "from": map[string]any{"postgres": from.Postgres, "redis": from.Redis}},
		}, nil
	})
}

// SetPaused stores a new version in which tenant's paused flag is
// paused and, when pl is not nil, its placement is *pl: the move's switch
// lets the tenant go on another cluster in one version, so that no sidecar
// ever runs its transactions unpaused on the old cluster after it was
// paused. The audit entry (action "pause") records the tenant, the flag
// and, with pl, the new and the old placement. ErrNotFound,
// ErrEmpty and ErrInvalid as SetPlacement; ErrUnchanged, writing nothing,
// when the tenant is so already.
func (s *Store) SetPaused(ctx context.Context, author, tenant string, paused bool, pl *Placement) (Version, error) {
	return s.write(ctx, author, func(tx pgx.Tx, cur *Version) (*change, error) {
		if cur == nil {
			return nil, ErrEmpty
		}
		p := proto.Clone(cur.Policy).(*policypb.Policy)
		var t *policypb.Tenant
		for _, x := range p.GetTenants() {
			if x.GetId() == tenant {
				t = x
				break
			}
		}
		if t == nil {
			return nil, fmt.Errorf("%w: tenant %q", ErrNotFound, tenant)
		}
		from := Placement{Postgres: t.GetPlacement().GetPostgres(), Redis: t.GetPlacement().GetRedis()}
		if t.Paused == paused && (pl == nil || *pl == from) {
			return nil, ErrUnchanged
		}
		t.Paused = paused
		detail := map[string]any{"tenant": tenant, "paused": paused}
		comment := fmt.Sprintf("pause tenant %s", tenant)
		if !paused {
			comment = fmt.Sprintf("unpause tenant %s", tenant)
		}
		if pl != nil && *pl != from {
			t.Placement = nil
			if *pl != (Placement{}) {
				t.Placement = &policypb.Placement{Postgres: pl.Postgres, Redis: pl.Redis}
			}
			detail["postgres"], detail["redis"] = pl.Postgres, pl.Redis
			detail["from"] = map[string]any{"postgres": from.Postgres, "redis": from.Redis}
			comment += fmt.Sprintf(", placed on postgres %q, redis %q", pl.Postgres, pl.Redis)
		}
		if err := policypb.Validate(p); err != nil {
			return nil, &InvalidError{err}
		}
		return &change{action: ActionPause, comment: comment, policy: p, detail: detail}, nil
	})
}

// Seed stores p as version 1 if and only if the store is empty, deciding
// in the same transaction that writes it, so of control planes seeding at
// once exactly one does. It returns the version written and true, or the
// current version and false when the store was not empty. Seed hashes
// plaintext credentials itself (policypb.HashCredentials, on a copy: p is
// not changed), so a seed file may carry passwords; then p must validate.
func (s *Store) Seed(ctx context.Context, author string, p *policypb.Policy) (Version, bool, error) {
	if p == nil {
		return Version{}, false, &InvalidError{errors.New("policy is nil")}
	}
	p = proto.Clone(p).(*policypb.Policy)
	if err := policypb.HashCredentials(p); err != nil {
		return Version{}, false, &InvalidError{err}
	}
	if err := policypb.Validate(p); err != nil {
		return Version{}, false, &InvalidError{err}
	}
	v, err := s.write(ctx, author, func(tx pgx.Tx, cur *Version) (*change, error) {
		if cur != nil {
			return nil, errSeeded
		}
		return &change{action: ActionSeed, comment: "seed", policy: p}, nil
	})
	if errors.Is(err, errSeeded) {
		return v, false, nil
	}
	if err != nil {
		return Version{}, false, err
	}
	return v, true, nil
}

// write runs one change in one transaction: it locks the head row (one
// writer at a time across every control plane), lets build derive the
// change from the current version (nil when the store is empty), then
// inserts the version, its audit entry and the new head, and NOTIFYs. When
// build fails, write returns its error with the current version.
func (s *Store) write(ctx context.Context, author string, build func(tx pgx.Tx, cur *Version) (*change, error)) (Version, error) {
	if author == "" {
		return Version{}, fmt.Errorf("%w: the author is empty", ErrBadText)
	}
	if err := checkText(author, maxAuthorLen, false); err != nil {
		return Version{}, fmt.Errorf("%w: the author %v", ErrBadText, err)
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return Version{}, fmt.Errorf("store: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var headVersion, headSeq int64
	var headHash []byte
	var headKeyID *string
	var at time.Time
	// clock_timestamp, not now(): taken after the lock is granted, so
	// timestamps follow the order of the chain.
	if err := tx.QueryRow(ctx, `SELECT version, audit_seq, audit_hash, audit_key_id, clock_timestamp()
		FROM tenantguard_cp.head WHERE id = 1 FOR UPDATE`).Scan(&headVersion, &headSeq, &headHash, &headKeyID, &at); err != nil {
		return Version{}, fmt.Errorf("store: lock head: %w", err)
	}
	at = at.UTC()
	if s.auditSigner == nil && headKeyID != nil {
		// An unsigned entry after a signed one fails verification: this
		// is a control plane left without the key (a rolling update that
		// adds it, or a configuration that lost it).
		return Version{}, fmt.Errorf("store: %w (the newest entry, seq %d, is signed with key %.40q)", ErrAuditKeyRequired, headSeq, *headKeyID)
	}
	var cur *Version
	if headVersion > 0 {
		v, err := getVersion(ctx, tx, headVersion)
		if err != nil {
			return Version{}, err
		}
		cur = &v
	}
	ch, err := build(tx, cur)
	if err != nil {
		if cur != nil {
			return *cur, err
		}
		return Version{}, err
	}

	if ch.inTx != nil {
		if err := ch.inTx(tx, at); err != nil {
			return Version{}, err
		}
	}
	if ch.policy == nil {
		return s.writeAuditOnly(ctx, tx, author, at, ch, headVersion, headSeq, headHash, cur)
	}
	n := headVersion + 1
	p := proto.Clone(ch.policy).(*policypb.Policy)
	p.Version = versionString(n)
	if err := policypb.Validate(p); err != nil {
		return Version{}, &InvalidError{err}
	}
	body, err := policypb.MarshalJSON(p)
	if err != nil {
		return Version{}, fmt.Errorf("store: %w", err)
	}
	newText, err := diffText(p)
	if err != nil {
		return Version{}, err
	}
	var oldText, from string
	var parent any // SQL NULL for the first version
	if cur != nil {
		if oldText, err = diffText(cur.Policy); err != nil {
			return Version{}, err
		}
		from, parent = fmt.Sprintf("version %d", cur.Version), cur.Version
	} else {
		from = "empty"
	}
	diff := unifiedDiff(from, fmt.Sprintf("version %d", n), oldText, newText)

	var stored string
	if err := tx.QueryRow(ctx, `INSERT INTO tenantguard_cp.versions (version, policy, author, created_at, comment, diff, parent)
		VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7) RETURNING policy::text`,
		n, string(body), author, at, ch.comment, diff, parent).Scan(&stored); err != nil {
		return Version{}, fmt.Errorf("store: insert version %d: %w", n, err)
	}
	// The body's hash is over what PostgreSQL stored, read back, so that
	// VerifyAudit computes it the same way.
	policySum, err := bodySHA256(stored)
	if err != nil {
		return Version{}, fmt.Errorf("store: version %d: %w", n, err)
	}
	detail := map[string]any{
		"policy_sha256": policySum,
		"diff_sha256":   textSHA256(diff),
		"comment":       ch.comment,
		"parent":        parent,
	}
	for k, v := range ch.detail {
		detail[k] = v
	}
	e, err := s.appendAudit(ctx, tx, AuditEntry{Seq: headSeq + 1, At: at, Actor: author, Action: ch.action, Version: n, PrevHash: headHash}, detail)
	if err != nil {
		return Version{}, err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, versionString(n)); err != nil {
		return Version{}, fmt.Errorf("store: notify: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Version{}, fmt.Errorf("store: commit version %d: %w", n, err)
	}

	v := Version{
		VersionInfo: VersionInfo{Version: n, Author: author, Comment: ch.comment, CreatedAt: at},
		Policy:      p,
		Diff:        diff,
	}
	if cur != nil {
		v.Parent = cur.Version
	}
	// The audit hash in the log anchors the chain outside the database: a
	// chain rewritten wholesale no longer matches the logs.
	s.log.Info("policy version stored", "version", n, "action", ch.action, "author", author,
		"audit_seq", e.Seq, "audit_hash", hex.EncodeToString(e.Hash), "audit_key_id", e.KeyID)
	s.publish(v)
	return v, nil
}

// appendAudit completes e (detail, hash, signature), inserts it and moves
// the head to it; the head row is locked by the caller's transaction.
func (s *Store) appendAudit(ctx context.Context, tx pgx.Tx, e AuditEntry, detail map[string]any) (AuditEntry, error) {
	var err error
	if e.Detail, err = canonicalJSON(detail); err != nil {
		return e, fmt.Errorf("store: audit detail: %w", err)
	}
	if e.Hash, err = e.computeHash(); err != nil {
		return e, fmt.Errorf("store: audit hash: %w", err)
	}
	var keyID *string // SQL NULL when unsigned
	if s.auditSigner != nil {
		e.KeyID, e.Signature = s.auditSigner.ID(), s.auditSigner.SignEntry(e.Hash)
		keyID = &e.KeyID
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tenantguard_cp.audit (seq, at, actor, action, version, detail, prev_hash, hash, key_id, signature)
		VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)`,
		e.Seq, e.At, e.Actor, e.Action, e.Version, string(e.Detail), e.PrevHash, e.Hash, keyID, e.Signature); err != nil {
		return e, fmt.Errorf("store: insert audit entry: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE tenantguard_cp.head SET version = $1, audit_seq = $2, audit_hash = $3, audit_key_id = $4 WHERE id = 1`,
		e.Version, e.Seq, e.Hash, keyID); err != nil {
		return e, fmt.Errorf("store: update head: %w", err)
	}
	return e, nil
}

// writeAuditOnly finishes a write whose change has no policy: its audit
// entry names the current version (0 when there is none) and its detail
// is the change's detail alone.
func (s *Store) writeAuditOnly(ctx context.Context, tx pgx.Tx, author string, at time.Time, ch *change, headVersion, headSeq int64, headHash []byte, cur *Version) (Version, error) {
	detail := ch.detail
	if detail == nil {
		detail = map[string]any{}
	}
	e, err := s.appendAudit(ctx, tx, AuditEntry{Seq: headSeq + 1, At: at, Actor: author, Action: ch.action, Version: headVersion, PrevHash: headHash}, detail)
	if err != nil {
		return Version{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return Version{}, fmt.Errorf("store: commit audit entry %d: %w", e.Seq, err)
	}
	s.log.Info("audit entry stored", "action", ch.action, "author", author,
		"audit_seq", e.Seq, "audit_hash", hex.EncodeToString(e.Hash), "audit_key_id", e.KeyID)
	if cur != nil {
		return *cur, nil
	}
	return Version{}, nil
}

// diffText is the text versions are diffed as: MarshalJSON without the
// version field, which differs between any two versions.
func diffText(p *policypb.Policy) (string, error) {
	q := proto.Clone(p).(*policypb.Policy)
	q.Version = ""
	b, err := policypb.MarshalJSON(q)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	return string(b), nil
}

// bodySHA256 is the hex SHA-256 of a stored policy's canonical JSON.
func bodySHA256(jsonText string) (string, error) {
	c, err := canonicalize([]byte(jsonText))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return hex.EncodeToString(sum[:]), nil
}

func textSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// checkText accepts UTF-8 text of at most max bytes without control
// characters, but for newlines and tabs when multiline.
func checkText(s string, max int, multiline bool) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("is longer than %d bytes", max)
	case !utf8.ValidString(s):
		return errors.New("is not UTF-8")
	case strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t'))
	}):
		return errors.New("has control characters")
	}
	return nil
}
