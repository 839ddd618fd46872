package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/policy"
)

// KindMove moves a tenant's rows to another PostgreSQL cluster online.
const KindMove = "move"

// A move copies a tenant's rows from the PostgreSQL cluster it is placed
// on (the source) to another cluster of the policy (the target) with
// logical replication, then switches its placement with its transactions
// held for a moment at the sidecars:
//
//	check               the target has the tables (same columns, row
//	                    security on) and none of the tenant's rows; the
//	                    source has wal_level=logical and PostgreSQL 15+
//	replica_identity    tables whose replica identity lacks the tenant
//	                    column get REPLICA IDENTITY FULL (a row filter on
//	                    a publication of updates and deletes needs it)
//	create_publication  on the source, the tenant's tables WHERE
//	                    (tenant_col = 'id'), publishing insert, update,
//	                    delete
//	create_subscription on the target, copy_data = true
//	wait_copied         every table copied (pg_subscription_rel 'r') and
//	                    the lag under max_lag_bytes
//	pause               a policy version with the tenant paused, accepted
//	                    by every connected sidecar: its transactions in
//	                    progress have ended and new ones wait
//	catch_up            a marker row written at the source after the
//	                    pause has reached the target (transactions apply
//	                    in commit order)
//	sync_sequences      the target's sequences of the tables at least the
//	                    source's
//	verify              row counts and checksums per table equal on both
//	                    sides
//	switch              one version: placed on the target and unpaused
//	                    (the point of no return)
//	drop_replication    subscription, publication and slot dropped, the
//	                    replica identities put back
//	delete_source_rows  the tenant's rows deleted at the source, in batches
//	verify_source_empty none left there
//
// Before switch, a failure (or cancel) undoes what ran: the pause is
// lifted, the subscription dropped and the rows it copied deleted at the
// target, the publication and the slot dropped, the replica identities
// put back; the source's rows are never touched. The measured pause (from
// the pausing version accepted to the switching version accepted) is in
// the result (pause_ms) and so in the audit record.

// MoveCluster is how a control plane reaches one PostgreSQL cluster of the
// policy for moves.
type MoveCluster struct {
	// AdminURL is a postgres:// URL of the application database as a role
	// that may create publications (owns the tables, or a superuser) and
	// subscriptions (a superuser on PostgreSQL 15) and reads and deletes
	// every tenant's rows: moves filter every statement by the tenant
	// column themselves.
	AdminURL string
	// PublisherConninfo is how the target server reaches this cluster as
	// a move's source (the subscription's CONNECTION, a libpq connection
	// string or URL); "" takes AdminURL.
	PublisherConninfo string
}

// MoveParams are a move's parameters.
type MoveParams struct {
	// Postgres names the target cluster (a cluster of the policy with a
	// postgres section).
	Postgres string `json:"postgres"`
	// CopyTimeout bounds the initial copy (default 1h).
	CopyTimeout duration `json:"copy_timeout,omitempty"`
	// MaxLagBytes is the replication lag under which the tenant is paused
	// (default 1 MiB).
	MaxLagBytes int64 `json:"max_lag_bytes,omitempty"`
	// CatchupTimeout bounds the wait, with the tenant paused, for the
	// target to replay the source's last WAL (default 30s); past it the
	// move is undone.
	CatchupTimeout duration `json:"catchup_timeout,omitempty"`
	// BatchSize is how many rows one DELETE removes at the source
	// (default 1000); BatchPause a pause between batches.
	BatchSize  int      `json:"batch_size,omitempty"`
	BatchPause duration `json:"batch_pause,omitempty"`
	// ReadyTimeout bounds each wait for the data planes to accept a
	// version (default the control plane's lifecycle.ready_timeout).
	ReadyTimeout duration `json:"ready_timeout,omitempty"`
}

// Defaults of MoveParams.
const (
	DefaultCopyTimeout    = time.Hour
	DefaultMaxLagBytes    = 1 << 20
	DefaultCatchupTimeout = 30 * time.Second
)

func parseMove(raw json.RawMessage) (MoveParams, error) {
	var p MoveParams
	if err := jsonUnmarshal(raw, &p); err != nil {
		return p, err
	}
	if err := policy.CheckTenantID(p.Postgres); p.Postgres == "" || err != nil {
		return p, errors.New(`postgres: the target cluster's name, e.g. {"postgres": "b"}`)
	}
	if p.CopyTimeout == 0 {
		p.CopyTimeout = duration(DefaultCopyTimeout)
	}
	if p.CatchupTimeout == 0 {
		p.CatchupTimeout = duration(DefaultCatchupTimeout)
	}
	switch {
	case p.MaxLagBytes < 0:
		return p, errors.New("max_lag_bytes: must not be negative")
	case p.MaxLagBytes == 0:
		p.MaxLagBytes = DefaultMaxLagBytes
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

func (s *Service) moveKind() workflow.Kind {
	return workflow.Kind{
		Name: KindMove,
		Steps: func(raw json.RawMessage) ([]workflow.Step, error) {
			if _, err := parseMove(raw); err != nil {
				return nil, err
			}
			if len(s.cfg.Move) == 0 {
				return nil, errors.New("the control plane has no lifecycle.move.clusters: it cannot reach the clusters to move between")
			}
			return []workflow.Step{
				{Name: "check", Do: s.moveCheck},
				{Name: "replica_identity", Do: s.moveReplicaIdentity, Undo: s.restoreReplicaIdentity},
				{Name: "create_publication", Do: s.createPublication, Undo: s.dropPublication},
				{Name: "create_subscription", Do: s.createSubscription, Undo: s.undoSubscription},
				{Name: "wait_copied", Do: s.waitCopied},
				{Name: "pause", Do: s.movePause, Undo: s.moveUnpause},
				{Name: "catch_up", Do: s.catchUp},
				{Name: "sync_sequences", Do: s.syncSequences},
				{Name: "verify", Do: s.moveVerify},
				// The point of no return: from here the tenant's
				// transactions run on the target.
				{Name: "switch", Do: s.moveSwitch, Forward: true},
				{Name: "drop_replication", Do: s.dropReplication, Forward: true},
				{Name: "delete_source_rows", Do: s.deleteSourceRows, Forward: true},
				{Name: "verify_source_empty", Do: s.verifySourceEmpty, Forward: true},
			}, nil
		},
		Summary: func(raw json.RawMessage) map[string]any {
			p, _ := parseMove(raw)
			return map[string]any{"postgres": p.Postgres, "catchup_timeout": time.Duration(p.CatchupTimeout).String(),
				"batch_size": p.BatchSize}
		},
	}
}

func moveParams(r *workflow.Run) (MoveParams, error) {
	var raw json.RawMessage
	if err := r.Params(&raw); err != nil {
		return MoveParams{}, err
	}
	p, err := parseMove(raw)
	if err != nil {
		return p, workflow.Permanent(err)
	}
	return p, nil
}

// moveRoute is where a move goes, fixed by its check step (the tenant's
// placement changes at its switch).
type moveRoute struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func route(r *workflow.Run) (moveRoute, error) {
	var rt moveRoute
	ok, err := r.Result("clusters", &rt)
	if err != nil {
		return rt, err
	}
	if !ok {
		return rt, workflow.Permanent(errors.New("no clusters recorded by the check step"))
	}
	return rt, nil
}

// replicationName is the move's publication, subscription and slot name.
func replicationName(r *workflow.Run) string {
	return "tg_move_" + r.ID[len("op-"):]
}

// pauseData is what the pause step remembers.
type pauseData struct {
	Version  int64     `json:"version"`
	PausedAt time.Time `json:"paused_at"` // when every data plane had accepted it
}

func (s *Service) movePause(ctx context.Context, r *workflow.Run) error {
	p, err := moveParams(r)
	if err != nil {
		return err
	}
	v, err := s.cfg.Policy.SetPaused(ctx, author(r), r.Tenant, true, nil)
	switch {
	case errors.Is(err, store.ErrUnchanged):
	case errors.Is(err, store.ErrNotFound):
		return workflow.Permanent(err)
	case err != nil:
		return err
	}
	if _, err := s.waitAccepted(ctx, r, v.Version, timeDuration(p.ReadyTimeout)); err != nil {
		return err
	}
	d := pauseData{Version: v.Version, PausedAt: time.Now()}
	if err := r.SetResult("paused_in_version", v.Version); err != nil {
		return err
	}
	if err := r.SetResult("paused_at", d.PausedAt); err != nil {
		return err
	}
	return r.Save(ctx, d)
}

// moveUnpause lifts the pause (the tenant stays where it was) and waits
// for the data planes to accept it.
func (s *Service) moveUnpause(ctx context.Context, r *workflow.Run) error {
	p, err := moveParams(r)
	if err != nil {
		return err
	}
	v, err := s.cfg.Policy.SetPaused(ctx, author(r), r.Tenant, false, nil)
	switch {
	case errors.Is(err, store.ErrUnchanged), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrEmpty):
		return nil
	case err != nil:
		return err
	}
	_, err = s.waitAccepted(ctx, r, v.Version, timeDuration(p.ReadyTimeout))
	return err
}

// moveSwitch places the tenant on the target and lets it go, in one
// version, and records how long it was paused.
func (s *Service) moveSwitch(ctx context.Context, r *workflow.Run) error {
	p, err := moveParams(r)
	if err != nil {
		return err
	}
	rt, err := route(r)
	if err != nil {
		return err
	}
	cur, err := s.current(ctx)
	if err != nil {
		return err
	}
	t := findTenant(cur.Policy, r.Tenant)
	if t == nil {
		return fmt.Errorf("tenant %s is no longer in the policy", r.Tenant)
	}
	pl := store.Placement{Postgres: rt.To, Redis: t.GetPlacement().GetRedis()}
	v, err := s.cfg.Policy.SetPaused(ctx, author(r), r.Tenant, false, &pl)
	if err != nil && !errors.Is(err, store.ErrUnchanged) {
		return err
	}
	n, err := s.waitAccepted(ctx, r, v.Version, timeDuration(p.ReadyTimeout))
	if err != nil {
		return err
	}
	resumed := time.Now()
	var pausedAt time.Time
	if ok, _ := r.Result("paused_at", &pausedAt); ok {
		var prev int64
		if ok, _ := r.Result("pause_ms", &prev); !ok { // a resumed step keeps the first measure
			if err := r.SetResult("pause_ms", resumed.Sub(pausedAt).Milliseconds()); err != nil {
				return err
			}
		}
	}
	if err := r.SetResult("switched_in_version", v.Version); err != nil {
		return err
	}
	if err := r.SetResult("data_planes_switched", n); err != nil {
		return err
	}
	return r.Save(ctx, struct {
		Version int64 `json:"version"`
	}{v.Version})
}
