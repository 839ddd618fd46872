package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/workflow"
)

// OffboardParams are an offboarding's parameters.
type OffboardParams struct {
	// Export writes an archive of the tenant's data first
	// (GET /v1/operations/{id}/archive).
	Export bool `json:"export,omitempty"`
	// BatchSize is how many rows one DELETE removes (default 1000).
	BatchSize int `json:"batch_size,omitempty"`
	// BatchPause is a pause between batches, to spare a busy primary.
	BatchPause duration `json:"batch_pause,omitempty"`
	// ReadyTimeout bounds the wait for the data planes to accept the
	// suspension (default the control plane's lifecycle.ready_timeout).
	ReadyTimeout duration `json:"ready_timeout,omitempty"`
}

// DefaultBatchSize is OffboardParams.BatchSize's default.
const DefaultBatchSize = 1000

func parseOffboard(raw json.RawMessage) (OffboardParams, error) {
	var p OffboardParams
	if err := jsonUnmarshal(raw, &p); err != nil {
		return p, err
	}
	switch {
	case p.BatchSize < 0 || p.BatchSize > 100000:
		return p, errors.New("batch_size: 1 to 100000")
	case p.BatchSize == 0:
		p.BatchSize = DefaultBatchSize
	}
	if time.Duration(p.BatchPause) > time.Minute {
		return p, errors.New("batch_pause: at most 1m")
	}
	return p, nil
}

func timeDuration(d duration) time.Duration { return time.Duration(d) }

func (s *Service) offboardKind() workflow.Kind {
	return workflow.Kind{
		Name: KindOffboard,
		Steps: func(raw json.RawMessage) ([]workflow.Step, error) {
			p, err := parseOffboard(raw)
			if err != nil {
				return nil, err
			}
			if p.Export && s.cfg.ArchiveDir == "" {
				return nil, ErrNoArchiveDir
			}
			steps := []workflow.Step{
				{Name: "suspend", Do: s.suspend, Undo: s.undoSuspend},
				{Name: "revoke_sessions", Do: s.revokeSessions},
				{Name: "wait_disconnected", Do: s.waitSuspended},
			}
			if p.Export {
				steps = append(steps, workflow.Step{Name: "export", Do: s.writeArchiveStep, Undo: s.removeArchive})
			}
			return append(steps,
				workflow.Step{Name: "count", Do: s.countData},
				// The point of no return: from here the operation goes
				// forward only, retried until it is done.
				workflow.Step{Name: "delete_rows", Do: s.deleteRows, Forward: true},
				workflow.Step{Name: "delete_keys", Do: s.deleteKeys, Forward: true},
				workflow.Step{Name: "remove_from_policy", Do: s.removeFromPolicy, Forward: true},
				workflow.Step{Name: "verify_empty", Do: s.verifyEmpty, Forward: true},
			), nil
		},
		Summary: func(raw json.RawMessage) map[string]any {
			p, _ := parseOffboard(raw)
			return map[string]any{"export": p.Export, "batch_size": p.BatchSize, "batch_pause": time.Duration(p.BatchPause).String()}
		},
	}
}

func offboardParams(r *workflow.Run) (OffboardParams, error) {
	var raw json.RawMessage
	if err := r.Params(&raw); err != nil {
		return OffboardParams{}, err
	}
	p, err := parseOffboard(raw)
	if err != nil {
		return p, workflow.Permanent(err)
	}
	return p, nil
}

// suspendData is what the suspend step remembers: whether the tenant was
// suspended before, so that undoing it does not resume a tenant an
// administrator had suspended.
type suspendData struct {
	WasSuspended bool  `json:"was_suspended"`
	Version      int64 `json:"version"`
}

func (s *Service) suspend(ctx context.Context, r *workflow.Run) error {
	var d suspendData
	ok, err := r.Load(&d)
	if err != nil {
		return err
	}
	if !ok {
		v, err := s.current(ctx)
		if err != nil {
			return err
		}
		t := findTenant(v.Policy, r.Tenant)
		if t == nil {
			return workflow.Permanent(fmt.Errorf("tenant %s is not in the policy", r.Tenant))
		}
		d.WasSuspended = t.GetSuspended()
		if err := r.Save(ctx, d); err != nil {
			return err
		}
	}
	v, err := s.cfg.Policy.SetSuspended(ctx, author(r), r.Tenant, true)
	switch {
	case errors.Is(err, store.ErrUnchanged):
	case errors.Is(err, store.ErrNotFound):
		return workflow.Permanent(err)
	case err != nil:
		return err
	}
	d.Version = v.Version
	if err := r.Save(ctx, d); err != nil {
		return err
	}
	return r.SetResult("suspended_in_version", v.Version)
}

func (s *Service) undoSuspend(ctx context.Context, r *workflow.Run) error {
	var d suspendData
	ok, err := r.Load(&d)
	if err != nil || !ok || d.WasSuspended {
		return err
	}
	_, err = s.cfg.Policy.SetSuspended(ctx, author(r), r.Tenant, false)
	if errors.Is(err, store.ErrUnchanged) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

func (s *Service) revokeSessions(ctx context.Context, r *workflow.Run) error {
	if s.cfg.Sessions == nil {
		return r.SetResult("sessions_revoked", "not configured")
	}
	n, err := s.cfg.Sessions.RevokeTenant(ctx, r.Tenant)
	if err != nil {
		return err
	}
	// Another attempt finds fewer: keep the first attempt's count.
	var prev int
	if ok, _ := r.Result("sessions_revoked", &prev); ok {
		n += prev
	}
	return r.SetResult("sessions_revoked", n)
}

// waitSuspended waits until the data planes have accepted the suspension:
// a sidecar ends a suspended tenant's connections when it applies it.
func (s *Service) waitSuspended(ctx context.Context, r *workflow.Run) error {
	p, err := offboardParams(r)
	if err != nil {
		return err
	}
	var version int64
	if ok, err := r.Result("suspended_in_version", &version); err != nil || !ok {
		return workflow.Permanent(fmt.Errorf("no version recorded by suspend: %v", err))
	}
	n, err := s.waitAccepted(ctx, r, version, timeDuration(p.ReadyTimeout))
	if err != nil {
		return err
	}
	return r.SetResult("data_planes_disconnected", n)
}

// counted is what the count step found, before anything is deleted.
type counted struct {
	Rows map[string]int64 `json:"rows"`
	Keys int64            `json:"keys"`
}

func (s *Service) countData(ctx context.Context, r *workflow.Run) error {
	rows, keys, err := s.tenantData(ctx, r.Tenant)
	if err != nil {
		return err
	}
	if rows == nil {
		rows = map[string]int64{}
	}
	return r.SetResult("found", counted{Rows: rows, Keys: keys})
}

// deleteProgress is delete_rows' saved state: rows deleted so far per
// table (a resumed step adds to it; rows deleted in a batch whose count
// was not saved before a crash are not in it, which verify_empty and the
// count before make up for).
type deleteProgress struct {
	Deleted map[string]int64 `json:"deleted"`
}

func (s *Service) deleteRows(ctx context.Context, r *workflow.Run) error {
	if s.cfg.Postgres == nil {
		return nil
	}
	p, err := offboardParams(r)
	if err != nil {
		return err
	}
	var d deleteProgress
	if _, err := r.Load(&d); err != nil {
		return err
	}
	if d.Deleted == nil {
		d.Deleted = map[string]int64{}
	}
	var found counted
	_, _ = r.Result("found", &found)
	ts, err := s.session(ctx, r.Tenant)
	if err != nil {
		return err
	}
	defer ts.close()
	base := map[string]int64{}
	for k, v := range d.Deleted {
		base[k] = v
	}
	sum := func() int64 { return total(d.Deleted) }
	lastSave := time.Now()
	for i := len(ts.tables) - 1; i >= 0; i-- { // children first
		t := ts.tables[i]
		_, err := ts.deleteRows(ctx, t, p.BatchSize, time.Duration(p.BatchPause), func(n int64) error {
			d.Deleted[t.Name] = base[t.Name] + n
			if time.Since(lastSave) >= time.Second {
				lastSave = time.Now()
				if err := r.Save(ctx, d); err != nil {
					return err
				}
			}
			return r.Progress(ctx, sum(), total(found.Rows), "deleting from "+t.Name)
		})
		if err != nil {
			_ = r.Save(context.WithoutCancel(ctx), d)
			return err
		}
	}
	return r.Save(ctx, d)
}

func (s *Service) deleteKeys(ctx context.Context, r *workflow.Run) error {
	if s.cfg.Redis == nil {
		return nil
	}
	p, err := offboardParams(r)
	if err != nil {
		return err
	}
	var found counted
	_, _ = r.Result("found", &found)
	v, err := s.current(ctx)
	if err != nil {
		return err
	}
	ns, err := namespaceOf(v.Policy, r.Tenant)
	if err != nil {
		return err
	}
	_, err = s.cfg.Redis.deleteAll(ctx, ns, time.Duration(p.BatchPause), func(n int64) error {
		return r.Progress(ctx, n, found.Keys, "unlinking keys")
	})
	return err
}

func (s *Service) removeFromPolicy(ctx context.Context, r *workflow.Run) error {
	v, err := s.cfg.Policy.RemoveTenant(ctx, author(r), r.ID, r.Tenant)
	if err != nil && !errors.Is(err, store.ErrUnchanged) {
		return err
	}
	return r.SetResult("removed_in_version", v.Version)
}

// verifyEmpty counts again: nothing of the tenant may be left. Then the
// result records what was deleted: every row and key counted before the
// deletion (none could be added since: the tenant was suspended, its
// connections ended, and now it is gone from the policy).
func (s *Service) verifyEmpty(ctx context.Context, r *workflow.Run) error {
	rows, keys, err := s.tenantData(ctx, r.Tenant)
	if err != nil {
		return err
	}
	if n := total(rows); n > 0 || keys > 0 {
		return fmt.Errorf("%d rows and %d keys of tenant %s are still there", n, keys, r.Tenant)
	}
	var found counted
	if _, err := r.Result("found", &found); err != nil {
		return err
	}
	if found.Rows == nil {
		found.Rows = map[string]int64{}
	}
	return r.SetResult("deleted", found)
}
