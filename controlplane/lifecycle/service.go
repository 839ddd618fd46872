package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Operation kinds.
const (
	KindProvision = "provision"
	KindExport    = "export"
	KindImport    = "import"
	KindOffboard  = "offboard"
)

// KindMove is in move.go.

// PolicyStore is what the operations need of the policy store;
// *store.Store has it.
type PolicyStore interface {
	Current(ctx context.Context) (store.Version, error)
	AddTenant(ctx context.Context, author, operation string, t *policypb.Tenant) (store.Version, error)
	RemoveTenant(ctx context.Context, author, operation, tenant string) (store.Version, error)
	SetSuspended(ctx context.Context, author, tenant string, suspended bool) (store.Version, error)
	SetPaused(ctx context.Context, author, tenant string, paused bool, pl *store.Placement) (store.Version, error)
}

var _ PolicyStore = (*store.Store)(nil)

// SessionRevoker revokes every session of a tenant (extauthz/session's
// Store has it).
type SessionRevoker interface {
	RevokeTenant(ctx context.Context, tenant string) (int, error)
}

// Fleet tells which data planes are connected and what they accepted
// (*xds.Server has it).
type Fleet interface {
	NodeStatus() map[string]xds.NodeStatus
}

// DefaultReadyTimeout is how long an operation waits for the connected
// data planes to accept a policy version.
const DefaultReadyTimeout = time.Minute

// Config is what the operations reach.
type Config struct {
	Policy PolicyStore
	// Postgres reaches the tenants' rows; nil: operations that need rows
	// fail ("not configured").
	Postgres *Postgres
	// Redis reaches the tenants' keys; nil: keys are left out (the
	// results say so).
	Redis *Redis
	// Sessions revokes a tenant's sessions on offboarding; nil: skipped.
	Sessions SessionRevoker
	// Fleet is waited on until every connected data plane has accepted a
	// policy version; nil: not waited for.
	Fleet Fleet
	// ArchiveDir holds archives: <operation id>.tar for exports (and
	// offboarding's), uploads for imports. "" disables export and import.
	ArchiveDir string
	// Move reaches the PostgreSQL clusters of the policy a tenant moves
	// between, by cluster name; none: move is refused.
	Move         map[string]MoveCluster
	ReadyTimeout time.Duration
	Logger       *slog.Logger
}

// Service defines the tenant lifecycle operations.
type Service struct {
	cfg Config
	log *slog.Logger
}

// New returns the operations over cfg. It creates ArchiveDir (0700) if
// it is set and missing.
func New(cfg Config) (*Service, error) {
	if cfg.Policy == nil {
		return nil, errors.New("lifecycle: no policy store")
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ArchiveDir != "" {
		if err := os.MkdirAll(cfg.ArchiveDir, 0o700); err != nil {
			return nil, fmt.Errorf("lifecycle: archive directory: %w", err)
		}
	}
	return &Service{cfg: cfg, log: cfg.Logger}, nil
}

// Kinds returns the operations for a workflow.Engine.
func (s *Service) Kinds() []workflow.Kind {
	return []workflow.Kind{s.provisionKind(), s.exportKind(), s.importKind(), s.offboardKind(), s.moveKind()}
}

// opArchiveRE is an operation's archive name.
var opArchiveRE = regexp.MustCompile(`^op-[0-9a-f]{16}$`)

// ArchivePath returns the archive an operation wrote (an export, or an
// offboarding that exported), if it exists.
func (s *Service) ArchivePath(opID string) (string, bool) {
	if s.cfg.ArchiveDir == "" || !opArchiveRE.MatchString(opID) {
		return "", false
	}
	p := filepath.Join(s.cfg.ArchiveDir, opID+".tar")
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	return p, true
}

// uploadRE is an uploaded archive's name.
var uploadRE = regexp.MustCompile(`^upload-[0-9a-f]{16}\.tar$`)

// ErrNoArchiveDir: the control plane has no archive directory.
var ErrNoArchiveDir = errors.New("no archive directory is configured (lifecycle.archive_dir)")

// SaveUpload stores an uploaded archive of at most max bytes in the
// archive directory, verifies it (manifest, line counts, checksums) and
// returns the name an import's "archive" parameter takes. A bad archive
// is removed and ErrBadArchive returned.
func (s *Service) SaveUpload(r io.Reader, max int64) (string, error) {
	if s.cfg.ArchiveDir == "" {
		return "", ErrNoArchiveDir
	}
	name := "upload-" + strings.TrimPrefix(workflow.NewID(), "op-") + ".tar"
	path := filepath.Join(s.cfg.ArchiveDir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	n, err := io.Copy(f, io.LimitReader(r, max+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > max {
		err = badArchive("larger than %d bytes", max)
	}
	if err == nil {
		err = verifyArchiveFile(path)
	}
	if err != nil {
		_ = os.Remove(path)
		return "", err
	}
	return name, nil
}

func verifyArchiveFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = readArchive(f, nil, nil)
	return err
}

// archiveSource resolves an import's archive parameter: an uploaded
// archive's name, or the id of the operation that wrote it.
func (s *Service) archiveSource(name string) (string, error) {
	if s.cfg.ArchiveDir == "" {
		return "", ErrNoArchiveDir
	}
	switch {
	case uploadRE.MatchString(name):
		return filepath.Join(s.cfg.ArchiveDir, name), nil
	case opArchiveRE.MatchString(name):
		return filepath.Join(s.cfg.ArchiveDir, name+".tar"), nil
	}
	return "", fmt.Errorf("archive %q is neither an operation id nor an uploaded archive's name", name)
}

// author is who a policy change made by an operation is attributed to.
func author(r *workflow.Run) string {
	a := r.Actor
	if len(a) > 150 {
		a = a[:150]
	}
	return fmt.Sprintf("%s (operation %s)", a, r.ID)
}

// current returns the current policy.
func (s *Service) current(ctx context.Context) (store.Version, error) {
	v, err := s.cfg.Policy.Current(ctx)
	if err != nil {
		return v, fmt.Errorf("policy: %w", err)
	}
	return v, nil
}

func findTenant(p *policypb.Policy, id string) *policypb.Tenant {
	for _, t := range p.GetTenants() {
		if t.GetId() == id {
			return t
		}
	}
	return nil
}

var errNoPostgres = workflow.Permanent(errors.New("the control plane has no lifecycle.postgres: it cannot reach the tenants' rows"))

// session opens a bound session for the tenant under the current policy.
func (s *Service) session(ctx context.Context, tenant string) (*tenantSession, error) {
	if s.cfg.Postgres == nil {
		return nil, errNoPostgres
	}
	v, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	ts, err := s.cfg.Postgres.session(ctx, v.Policy, tenant)
	if errors.Is(err, errNotIsolated) {
		return nil, workflow.Permanent(err)
	}
	return ts, err
}

// emptiness reports the tenant's rows and keys; used where an operation
// may only start on a tenant with no data (so that undoing it may delete
// all of the tenant's data).
func (s *Service) tenantData(ctx context.Context, tenant string) (rows map[string]int64, keys int64, err error) {
	if s.cfg.Postgres != nil {
		ts, err := s.session(ctx, tenant)
		if err != nil {
			return nil, 0, err
		}
		defer ts.close()
		if rows, err = ts.count(ctx); err != nil {
			return nil, 0, err
		}
	}
	if s.cfg.Redis != nil {
		v, err := s.current(ctx)
		if err != nil {
			return nil, 0, err
		}
		ns, err := namespaceOf(v.Policy, tenant)
		if err != nil {
			return nil, 0, workflow.Permanent(err)
		}
		if keys, err = s.cfg.Redis.count(ctx, ns); err != nil {
			return nil, 0, err
		}
	}
	return rows, keys, nil
}

// requireEmpty fails permanently when the tenant has rows or keys.
func (s *Service) requireEmpty(ctx context.Context, tenant, why string) error {
	rows, keys, err := s.tenantData(ctx, tenant)
	if err != nil {
		return err
	}
	if n := total(rows); n > 0 || keys > 0 {
		return workflow.Permanent(fmt.Errorf("tenant %s already has data (%d rows, %d keys): %s", tenant, n, keys, why))
	}
	return nil
}

// removeAllData deletes every row and key of the tenant: the undo of
// steps that loaded data into a tenant that was checked empty first.
func (s *Service) removeAllData(ctx context.Context, tenant string, rows, keys bool) error {
	if rows && s.cfg.Postgres != nil {
		ts, err := s.session(ctx, tenant)
		if err != nil {
			return err
		}
		_, err = ts.deleteAll(ctx)
		ts.close()
		if err != nil {
			return err
		}
	}
	if keys && s.cfg.Redis != nil {
		v, err := s.current(ctx)
		if err != nil {
			return err
		}
		ns, err := namespaceOf(v.Policy, tenant)
		if err != nil {
			return err
		}
		if _, err := s.cfg.Redis.deleteAll(ctx, ns, 0, nil); err != nil {
			return err
		}
	}
	return nil
}

// waitAccepted waits until every data plane connected to the control
// planes sharing the store (Config.Fleet; see package fleet) that takes
// the policy has accepted version (or a later one). A
// data plane that rejects it fails the wait at once; so does the timeout.
// It returns how many data planes accepted it.
func (s *Service) waitAccepted(ctx context.Context, r *workflow.Run, version int64, timeout time.Duration) (int, error) {
	if s.cfg.Fleet == nil {
		return 0, nil
	}
	if timeout <= 0 {
		timeout = s.cfg.ReadyTimeout
	}
	deadline := time.Now().Add(timeout)
	// Polled often: a move's pause is measured from these waits.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if f, ok := s.cfg.Fleet.(interface{ Ready() bool }); ok && !f.Ready() {
			// The other control planes' data planes are not known yet
			// (this instance has just started): wait for them.
			_ = r.Progress(ctx, 0, 0, "reading the fleet's status from the other control planes")
			if time.Now().After(deadline) {
				return 0, workflow.Permanent(fmt.Errorf("policy version %d: the fleet's status could not be read from the store within %s", version, timeout))
			}
			select {
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			case <-tick.C:
			}
			continue
		}
		var waiting []string
		accepted := 0
		for id, st := range s.cfg.Fleet.NodeStatus() {
			if st.Streams <= 0 || !st.Policy {
				continue
			}
			if versionNumber(st.AckedVersion) >= version {
				accepted++
				continue
			}
			if versionNumber(st.NackedVersion) >= version && !st.LastNack.Before(st.LastAck) {
				return accepted, workflow.Permanent(fmt.Errorf("data plane %s rejected policy version %d: %s", id, version, st.LastError))
			}
			waiting = append(waiting, id)
		}
		if len(waiting) == 0 {
			return accepted, nil
		}
		sort.Strings(waiting)
		_ = r.Progress(ctx, int64(accepted), int64(accepted+len(waiting)), "waiting for "+strings.Join(waiting, ", "))
		if time.Now().After(deadline) {
			return accepted, workflow.Permanent(fmt.Errorf("policy version %d not accepted within %s by %d data plane(s): %s",
				version, timeout, len(waiting), strings.Join(waiting, ", ")))
		}
		select {
		case <-ctx.Done():
			return accepted, context.Cause(ctx)
		case <-tick.C:
		}
	}
}

func versionNumber(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// duration is a JSON duration: "30s", "1m".
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := jsonUnmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration like 30s", s)
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

// Operations is a workflow engine with the lifecycle's kinds, and the
// archive directory: what the admin API serves.
type Operations struct {
	*workflow.Engine
	*Service
}
