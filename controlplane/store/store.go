package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Errors the Store returns; compare with errors.Is.
var (
	// ErrNotFound: no such version, or no such tenant.
	ErrNotFound = errors.New("not found")
	// ErrEmpty: no version is stored yet (Current on a fresh database).
	// errors.Is(ErrEmpty, ErrNotFound) holds.
	ErrEmpty = fmt.Errorf("%w: no policy version is stored yet", ErrNotFound)
	// ErrConflict: PutIf's expected parent is no longer the current version
	// (a *ConflictError says which is).
	ErrConflict = errors.New("version conflict")
	// ErrUnchanged: SetSuspended found the tenant already in that state; no
	// version was written and the current one is returned with it.
	ErrUnchanged = errors.New("nothing to change")
	// ErrInvalid: the policy failed validation (an *InvalidError, whose
	// chain holds the *policy.FieldError naming the field).
	ErrInvalid = errors.New("invalid policy")
	// ErrBadText: an author or comment that cannot be stored (empty
	// author, too long, not UTF-8, control characters).
	ErrBadText = errors.New("bad author or comment")
	// ErrAuditKeyRequired: the audit chain's newest entry is signed and
	// this Store has no signing key, so the entry it would write would
	// break the chain's signatures. Nothing is written.
	ErrAuditKeyRequired = errors.New("the audit chain is signed: writing needs the audit signing key (audit_key_file)")
)

// ConflictError is the ErrConflict of PutIf: the version the caller based
// its change on and the one that is current.
type ConflictError struct {
	Expected, Current int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("version conflict: expected version %d to be current, it is %d", e.Expected, e.Current)
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// InvalidError is a policy that Validate refused. Its chain holds
// Validate's error, usually a *policy.FieldError.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return "invalid policy: " + e.Err.Error() }

// Unwrap gives Validate's error (errors.As finds the *policy.FieldError).
func (e *InvalidError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalid) hold.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// VersionInfo describes one stored version, without its policy.
type VersionInfo struct {
	// Version numbers versions 1, 2, 3, … in the order they were written.
	Version int64
	// Parent is the version that was current when this one was written; 0
	// for the first.
	Parent    int64
	Author    string
	Comment   string
	CreatedAt time.Time // UTC, microseconds
}

// Version is one stored version with its policy. Policy.Version is the
// version number in decimal. A Version the Store hands out (also through
// Subscribe) is shared: treat it as read-only.
type Version struct {
	VersionInfo
	Policy *policypb.Policy
	// Diff is a unified diff of the parent's MarshalJSON text against this
	// one's, both without their "version" field (which always changes);
	// for version 1 against an empty text. "" when the bodies are equal;
	// a line starting "diff omitted:" when the texts were too large or too
	// different to diff within bounds.
	Diff string
}

// Store is the versioned policy store of the control plane. Its methods
// are safe for concurrent use, also by several control-plane processes on
// one database.
type Store struct {
	pool      *pgxpool.Pool
	log       *slog.Logger
	listenCfg *pgx.ConnConfig

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	subs   map[chan Version]struct{}
	latest *Version // newest version delivered to subscribers
	closed bool

	listens    atomic.Int64 // LISTEN sessions established, the first included
	listenUp   atomic.Bool
	curVersion atomic.Int64

	auditSigner     *auditkey.SigningKey // nil: entries are written unsigned
	auditKeys       auditkey.Set         // nil: signatures are not checked
	auditSignedFrom int64
	audit           auditState
	auditChecks     *prometheus.CounterVec
}

// Option configures Open.
type Option func(*Store)

// AuditKeys are the keys of the audit chain's signatures.
type AuditKeys struct {
	// Signing signs every entry this Store writes; nil writes them
	// unsigned, which Store refuses once the chain's newest entry is
	// signed (ErrAuditKeyRequired).
	Signing *auditkey.SigningKey
	// Verification are the keys entries may be signed with: the public
	// halves of earlier signing keys, and of keys other control planes
	// sign with during a rotation. Signing's own is implied. With none at
	// all (and no Signing) signatures are not checked.
	Verification []*auditkey.VerificationKey
	// SignedFrom, if not 0, is the seq from which every entry must be
	// signed: set it to the first signed entry after upgrading a store
	// (AuditReport.KeyedFromSeq), or to 1 for a store keyed from the
	// start, so that stripping every signature is caught after a restart
	// too. (A running Store remembers the first signed entry it verified.)
	SignedFrom int64
}

// WithAuditKeys signs and verifies the audit chain with these keys.
func WithAuditKeys(k AuditKeys) Option {
	return func(s *Store) {
		s.auditSigner = k.Signing
		keys := k.Verification
		if k.Signing != nil {
			keys = append(keys[:len(keys):len(keys)], k.Signing.Public())
		}
		if len(keys) > 0 {
			s.auditKeys = auditkey.NewSet(keys...)
		}
		s.auditSignedFrom = max(k.SignedFrom, 0)
	}
}

// Open connects to PostgreSQL at pgURL (a pgx connection string), creates
// or upgrades the schema tenantguard_cp, and starts listening for versions
// written by any control plane on the database. The listener is up when
// Open returns. ctx bounds only Open itself. Without WithAuditKeys the
// audit chain is hash-only.
func Open(ctx context.Context, pgURL string, log *slog.Logger, opts ...Option) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg, err := pgxpool.ParseConfig(pgURL)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "tenantguard-controlplane"
	}
	listenCfg := cfg.ConnConfig.Copy()
	listenCfg.RuntimeParams["application_name"] = ListenerApplicationName
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Store{pool: pool, log: log, listenCfg: listenCfg, subs: make(map[chan Version]struct{}), done: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	s.initAudit()
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	// LISTEN before reading the current version, so that nothing written
	// in between is missed.
	conn, err := s.listen(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	cur, err := s.Current(ctx)
	switch {
	case err == nil:
		s.latest = &cur
		s.curVersion.Store(cur.Version)
	case errors.Is(err, ErrEmpty):
	default:
		_ = conn.Close(context.WithoutCancel(ctx))
		pool.Close()
		return nil, err
	}
	lctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.listenLoop(lctx, conn)
	return s, nil
}

// Close stops the listener, ends every subscription (their channels are
// closed) and closes the connections. It is safe to call more than once.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.stop()
		<-s.done
		s.mu.Lock()
		s.closed = true
		for ch := range s.subs {
			close(ch)
			delete(s.subs, ch)
		}
		s.mu.Unlock()
		s.pool.Close()
	})
}

// versionColumns are the columns scanVersion reads, in its order.
const versionColumns = `version, coalesce(parent, 0), author, comment, created_at, diff, policy::text`

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func scanVersion(row pgx.Row) (Version, error) {
	var v Version
	var body string
	if err := row.Scan(&v.Version, &v.Parent, &v.Author, &v.Comment, &v.CreatedAt, &v.Diff, &body); err != nil {
		return Version{}, err
	}
	v.CreatedAt = v.CreatedAt.UTC()
	p, err := policypb.ParseJSON([]byte(body))
	if err != nil {
		return Version{}, fmt.Errorf("stored version %d: %w", v.Version, err)
	}
	v.Policy = p
	return v, nil
}

func getVersion(ctx context.Context, db queryRower, n int64) (Version, error) {
	v, err := scanVersion(db.QueryRow(ctx, `SELECT `+versionColumns+` FROM tenantguard_cp.versions WHERE version = $1`, n))
	if errors.Is(err, pgx.ErrNoRows) {
		return Version{}, fmt.Errorf("%w: version %d", ErrNotFound, n)
	}
	if err != nil {
		return Version{}, fmt.Errorf("store: get version %d: %w", n, err)
	}
	return v, nil
}

// Current returns the newest version; ErrEmpty when there is none.
func (s *Store) Current(ctx context.Context) (Version, error) {
	v, err := scanVersion(s.pool.QueryRow(ctx, `SELECT `+versionColumns+` FROM tenantguard_cp.versions ORDER BY version DESC LIMIT 1`))
	if errors.Is(err, pgx.ErrNoRows) {
		return Version{}, ErrEmpty
	}
	if err != nil {
		return Version{}, fmt.Errorf("store: current version: %w", err)
	}
	return v, nil
}

// Get returns version n; ErrNotFound when there is no such version.
func (s *Store) Get(ctx context.Context, n int64) (Version, error) {
	return getVersion(ctx, s.pool, n)
}

// Bounds of List's limit.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// List returns up to limit versions older than before (all when before is
// 0 or less), newest first, without their policies or diffs. A limit of 0
// or less means DefaultListLimit; it is capped at MaxListLimit.
func (s *Store) List(ctx context.Context, limit int, before int64) ([]VersionInfo, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, `SELECT version, coalesce(parent, 0), author, comment, created_at
		FROM tenantguard_cp.versions WHERE version < $1 ORDER BY version DESC LIMIT $2`, before, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list versions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (VersionInfo, error) {
		var vi VersionInfo
		err := row.Scan(&vi.Version, &vi.Parent, &vi.Author, &vi.Comment, &vi.CreatedAt)
		vi.CreatedAt = vi.CreatedAt.UTC()
		return vi, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list versions: %w", err)
	}
	return out, nil
}

// versionString is the policy's version field for version n.
func versionString(n int64) string { return strconv.FormatInt(n, 10) }
