package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Operation states (the operations table's state column).
const (
	OpRunning      = "running"      // steps are being run forward
	OpCompensating = "compensating" // a step failed or cancel was asked: steps are being undone, newest first
	OpSucceeded    = "succeeded"
	OpFailed       = "failed"
	OpCancelled    = "cancelled"
)

// Errors of the operation methods; compare with errors.Is.
var (
	// ErrOperationActive: the tenant already has a running operation.
	ErrOperationActive = errors.New("the tenant has an operation in progress")
	// ErrLeaseLost: the caller no longer holds the operation's lease
	// (it expired and another control plane took the operation over, or
	// the operation finished). The caller must stop working on it.
	ErrLeaseLost = errors.New("operation lease lost")
	// ErrFinished: the operation has already finished.
	ErrFinished = errors.New("operation has finished")
)

// Operation is one lifecycle operation as stored. Params, Steps and
// Result are JSON the workflow engine owns; the store keeps them as they
// are.
type Operation struct {
	ID     string
	Kind   string
	Tenant string
	Actor  string
	Params json.RawMessage
	State  string
	// Step is the index of the next step to run (running) or to undo
	// (compensating).
	Step            int
	Steps           json.RawMessage
	Error           string
	Result          json.RawMessage
	CancelRequested bool
	// LeaseOwner holds the operation until LeaseExpires; "" when nobody does.
	LeaseOwner   string
	LeaseExpires time.Time
	// Claims counts how many times a control plane took the operation up
	// (1 for one that ran where it was created without interruption).
	Claims     int
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time // zero while active
}

// Active reports whether the operation has not finished.
func (o *Operation) Active() bool { return o.State == OpRunning || o.State == OpCompensating }

// NewOperation is what CreateOperation stores.
type NewOperation struct {
	ID, Kind, Tenant, Actor string
	Params                  json.RawMessage
	Steps                   json.RawMessage
	// AuditDetail is added to the start entry's detail (operation, kind,
	// tenant and event are set by the store).
	AuditDetail map[string]any
}

// OperationUpdate is the state an operation's runner saves.
type OperationUpdate struct {
	State  string
	Step   int
	Steps  json.RawMessage
	Error  string
	Result json.RawMessage
}

const operationColumns = `id, kind, tenant, actor, params::text, state, step, steps::text, error, result::text,
	cancel_requested, coalesce(lease_owner, ''), coalesce(lease_expires, 'epoch'), claims, created_at, updated_at,
	coalesce(finished_at, 'epoch')`

func scanOperation(row pgx.Row) (Operation, error) {
	var o Operation
	var params, steps, result string
	if err := row.Scan(&o.ID, &o.Kind, &o.Tenant, &o.Actor, &params, &o.State, &o.Step, &steps, &o.Error, &result,
		&o.CancelRequested, &o.LeaseOwner, &o.LeaseExpires, &o.Claims, &o.CreatedAt, &o.UpdatedAt, &o.FinishedAt); err != nil {
		return o, err
	}
	o.Params, o.Steps, o.Result = json.RawMessage(params), json.RawMessage(steps), json.RawMessage(result)
	for _, t := range []*time.Time{&o.LeaseExpires, &o.CreatedAt, &o.UpdatedAt, &o.FinishedAt} {
		*t = t.UTC()
		if t.Unix() == 0 {
			*t = time.Time{}
		}
	}
	return o, nil
}

func leaseInterval(d time.Duration) string { return fmt.Sprintf("%d microseconds", d.Microseconds()) }

// CreateOperation stores a new running operation, held by owner for
// lease, and its start entry in the audit chain, in one transaction.
// ErrOperationActive when the tenant already has an active operation.
func (s *Store) CreateOperation(ctx context.Context, n NewOperation, owner string, lease time.Duration) (Operation, error) {
	var op Operation
	detail := map[string]any{"operation": n.ID, "kind": n.Kind, "tenant": n.Tenant, "event": "start"}
	for k, v := range n.AuditDetail {
		if _, set := detail[k]; !set {
			detail[k] = v
		}
	}
	detail, err := normalizeDetail(detail)
	if err != nil {
		return Operation{}, err
	}
	_, err = s.write(ctx, n.Actor, func(tx pgx.Tx, _ *Version) (*change, error) {
		return &change{action: ActionOperation, detail: detail, inTx: func(tx pgx.Tx, at time.Time) error {
			var err error
			op, err = scanOperation(tx.QueryRow(ctx, `INSERT INTO tenantguard_cp.operations
				(id, kind, tenant, actor, params, state, step, steps, lease_owner, lease_expires, claims, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5::jsonb, 'running', 0, $6::jsonb, $7, clock_timestamp() + $8::interval, 1, $9, $9)
				RETURNING `+operationColumns, n.ID, n.Kind, n.Tenant, n.Actor, string(n.Params), string(n.Steps), owner, leaseInterval(lease), at))
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "23505" {
				if pe.ConstraintName == "operations_one_active_per_tenant" {
					return fmt.Errorf("%w: tenant %s", ErrOperationActive, n.Tenant)
				}
				return fmt.Errorf("store: operation %s exists: %w", n.ID, err)
			}
			if err != nil {
				return fmt.Errorf("store: insert operation: %w", err)
			}
			return nil
		}}, nil
	})
	if err != nil {
		return Operation{}, err
	}
	return op, nil
}

// GetOperation returns one operation; ErrNotFound when there is none.
func (s *Store) GetOperation(ctx context.Context, id string) (Operation, error) {
	op, err := scanOperation(s.pool.QueryRow(ctx, `SELECT `+operationColumns+` FROM tenantguard_cp.operations WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Operation{}, fmt.Errorf("%w: operation %s", ErrNotFound, id)
	}
	if err != nil {
		return Operation{}, fmt.Errorf("store: get operation: %w", err)
	}
	return op, nil
}

// OperationQuery selects operations for ListOperations.
type OperationQuery struct {
	Tenant string // "" for every tenant
	Active bool   // only running or compensating ones
	// Limit: DefaultListLimit when 0 or less, at most MaxListLimit.
	Limit int
	// Before: only operations created before this one (a page's last id).
	Before string
}

// ListOperations returns operations, newest first.
func (s *Store) ListOperations(ctx context.Context, q OperationQuery) ([]Operation, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	rows, err := s.pool.Query(ctx, `SELECT `+operationColumns+` FROM tenantguard_cp.operations o
		WHERE ($1 = '' OR tenant = $1)
		  AND (NOT $2 OR state IN ('running', 'compensating'))
		  AND ($3 = '' OR (created_at, id) < (SELECT created_at, id FROM tenantguard_cp.operations WHERE id = $3))
		ORDER BY created_at DESC, id DESC LIMIT $4`, q.Tenant, q.Active, q.Before, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list operations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Operation, error) { return scanOperation(row) })
	if err != nil {
		return nil, fmt.Errorf("store: list operations: %w", err)
	}
	return out, nil
}

// ClaimOperations takes up to limit active operations whose lease has
// expired (their control plane stopped or died), holding them for owner
// for lease, and returns them. Operations another control plane claims at
// the same moment are skipped, not waited for.
func (s *Store) ClaimOperations(ctx context.Context, owner string, lease time.Duration, limit int) ([]Operation, error) {
	rows, err := s.pool.Query(ctx, `UPDATE tenantguard_cp.operations o
		SET lease_owner = $1, lease_expires = clock_timestamp() + $2::interval, claims = claims + 1, updated_at = clock_timestamp()
		WHERE id IN (SELECT id FROM tenantguard_cp.operations
			WHERE state IN ('running', 'compensating') AND (lease_expires IS NULL OR lease_expires < clock_timestamp())
			ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED)
		RETURNING `+operationColumns, owner, leaseInterval(lease), limit)
	if err != nil {
		return nil, fmt.Errorf("store: claim operations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Operation, error) { return scanOperation(row) })
	if err != nil {
		return nil, fmt.Errorf("store: claim operations: %w", err)
	}
	return out, nil
}

// RenewLease extends owner's lease of operation id by lease from now and
// reports whether cancellation has been requested. ErrLeaseLost when
// owner no longer holds a live lease.
func (s *Store) RenewLease(ctx context.Context, id, owner string, lease time.Duration) (cancelRequested bool, err error) {
	err = s.pool.QueryRow(ctx, `UPDATE tenantguard_cp.operations
		SET lease_expires = clock_timestamp() + $3::interval
		WHERE id = $1 AND lease_owner = $2 AND lease_expires > clock_timestamp() AND state IN ('running', 'compensating')
		RETURNING cancel_requested`, id, owner, leaseInterval(lease)).Scan(&cancelRequested)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("%w: operation %s", ErrLeaseLost, id)
	}
	if err != nil {
		return false, fmt.Errorf("store: renew lease: %w", err)
	}
	return cancelRequested, nil
}

// ReleaseLease gives the operation up (a control plane shutting down), so
// that another takes it over at once rather than after the lease expires.
func (s *Store) ReleaseLease(ctx context.Context, id, owner string) error {
	_, err := s.pool.Exec(ctx, `UPDATE tenantguard_cp.operations SET lease_expires = clock_timestamp() - interval '1 microsecond'
		WHERE id = $1 AND lease_owner = $2 AND state IN ('running', 'compensating')`, id, owner)
	if err != nil {
		return fmt.Errorf("store: release lease: %w", err)
	}
	return nil
}

// SaveOperation stores the runner's progress, if owner still holds a live
// lease (ErrLeaseLost otherwise), and reports whether cancellation has
// been requested. u.State must be OpRunning or OpCompensating: finishing
// is FinishOperation's.
func (s *Store) SaveOperation(ctx context.Context, id, owner string, u OperationUpdate) (cancelRequested bool, err error) {
	if u.State != OpRunning && u.State != OpCompensating {
		return false, fmt.Errorf("store: save operation: state %q is not an active state", u.State)
	}
	err = s.pool.QueryRow(ctx, `UPDATE tenantguard_cp.operations
		SET state = $3, step = $4, steps = $5::jsonb, error = $6, result = $7::jsonb, updated_at = clock_timestamp()
		WHERE id = $1 AND lease_owner = $2 AND lease_expires > clock_timestamp() AND state IN ('running', 'compensating')
		RETURNING cancel_requested`, id, owner, u.State, u.Step, string(u.Steps), u.Error, jsonOrEmpty(u.Result)).Scan(&cancelRequested)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("%w: operation %s", ErrLeaseLost, id)
	}
	if err != nil {
		return false, fmt.Errorf("store: save operation: %w", err)
	}
	return cancelRequested, nil
}

func jsonOrEmpty(b json.RawMessage) string {
	if len(b) == 0 {
		return "{}"
	}
	return string(b)
}

// FinishOperation ends an operation held by owner in state (OpSucceeded,
// OpFailed or OpCancelled) and writes its end entry in the audit chain,
// in one transaction. auditDetail is added to the entry's detail
// (operation, kind, tenant, event, state and error are set by the store).
// ErrLeaseLost when owner no longer holds a live lease; nothing is then
// written.
func (s *Store) FinishOperation(ctx context.Context, id, owner string, u OperationUpdate, auditDetail map[string]any) (Operation, error) {
	switch u.State {
	case OpSucceeded, OpFailed, OpCancelled:
	default:
		return Operation{}, fmt.Errorf("store: finish operation: %q is not a final state", u.State)
	}
	// The actor of the end entry is the operation's: read it first (it
	// never changes), so that write's author check applies to it.
	cur, err := s.GetOperation(ctx, id)
	if err != nil {
		return Operation{}, err
	}
	detail := map[string]any{}
	for k, v := range auditDetail {
		detail[k] = v
	}
	for k, v := range map[string]any{"operation": id, "kind": cur.Kind, "tenant": cur.Tenant, "event": "end", "state": u.State, "error": u.Error} {
		detail[k] = v
	}
	if detail, err = normalizeDetail(detail); err != nil {
		return Operation{}, err
	}
	var op Operation
	_, err = s.write(ctx, cur.Actor, func(tx pgx.Tx, _ *Version) (*change, error) {
		return &change{action: ActionOperation, detail: detail, inTx: func(tx pgx.Tx, at time.Time) error {
			var err error
			op, err = scanOperation(tx.QueryRow(ctx, `UPDATE tenantguard_cp.operations
				SET state = $3, step = $4, steps = $5::jsonb, error = $6, result = $7::jsonb,
				    updated_at = $8, finished_at = $8, lease_owner = NULL, lease_expires = NULL
				WHERE id = $1 AND lease_owner = $2 AND lease_expires > clock_timestamp() AND state IN ('running', 'compensating')
				RETURNING `+operationColumns, id, owner, u.State, u.Step, string(u.Steps), u.Error, jsonOrEmpty(u.Result), at))
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: operation %s", ErrLeaseLost, id)
			}
			if err != nil {
				return fmt.Errorf("store: finish operation: %w", err)
			}
			return nil
		}}, nil
	})
	if err != nil {
		return Operation{}, err
	}
	return op, nil
}

// RequestCancel marks an active operation for cancellation; its runner
// undoes what it did and ends it cancelled. ErrFinished when it has
// already finished; ErrNotFound when there is no such operation.
func (s *Store) RequestCancel(ctx context.Context, id string) (Operation, error) {
	op, err := scanOperation(s.pool.QueryRow(ctx, `UPDATE tenantguard_cp.operations
		SET cancel_requested = true, updated_at = clock_timestamp()
		WHERE id = $1 AND state IN ('running', 'compensating')
		RETURNING `+operationColumns, id))
	if errors.Is(err, pgx.ErrNoRows) {
		cur, gerr := s.GetOperation(ctx, id)
		if gerr != nil {
			return Operation{}, gerr
		}
		return cur, fmt.Errorf("%w: operation %s is %s", ErrFinished, id, cur.State)
	}
	if err != nil {
		return Operation{}, fmt.Errorf("store: cancel operation: %w", err)
	}
	return op, nil
}

// AddTenant stores a new version with t added to the policy (a lifecycle
// operation's change, recorded as ActionAddTenant with the operation's
// id). When the policy already has a tenant of that id equal to t, nothing
// is written and ErrUnchanged is returned with the current version (so a
// retried step is a no-op); a different one is ErrExists.
func (s *Store) AddTenant(ctx context.Context, author, operation string, t *policypb.Tenant) (Version, error) {
	return s.write(ctx, author, func(tx pgx.Tx, cur *Version) (*change, error) {
		if cur == nil {
			return nil, ErrEmpty
		}
		p := proto.Clone(cur.Policy).(*policypb.Policy)
		for _, x := range p.GetTenants() {
			if x.GetId() == t.GetId() {
				if proto.Equal(x, t) {
					return nil, ErrUnchanged
				}
				return nil, fmt.Errorf("%w: tenant %q", ErrExists, t.GetId())
			}
		}
		p.Tenants = append(p.Tenants, proto.Clone(t).(*policypb.Tenant))
		return &change{
			action:  ActionAddTenant,
			comment: fmt.Sprintf("add tenant %s (operation %s)", t.GetId(), operation),
			policy:  p,
			detail:  map[string]any{"tenant": t.GetId(), "operation": operation},
		}, nil
	})
}

// RemoveTenant stores a new version without tenant (ActionRemoveTenant,
// with the operation's id). When the policy has no such tenant nothing is
// written and ErrUnchanged is returned with the current version.
func (s *Store) RemoveTenant(ctx context.Context, author, operation, tenant string) (Version, error) {
	return s.write(ctx, author, func(tx pgx.Tx, cur *Version) (*change, error) {
		if cur == nil {
			return nil, ErrUnchanged
		}
		p := proto.Clone(cur.Policy).(*policypb.Policy)
		i := -1
		for j, x := range p.GetTenants() {
			if x.GetId() == tenant {
				i = j
				break
			}
		}
		if i < 0 {
			return nil, ErrUnchanged
		}
		p.Tenants = append(p.Tenants[:i], p.Tenants[i+1:]...)
		return &change{
			action:  ActionRemoveTenant,
			comment: fmt.Sprintf("remove tenant %s (operation %s)", tenant, operation),
			policy:  p,
			detail:  map[string]any{"tenant": tenant, "operation": operation},
		}, nil
	})
}

// ErrExists: AddTenant found a different tenant of that id.
var ErrExists = errors.New("already exists")

// normalizeDetail turns an audit detail built of Go values into the JSON
// tree the canonical encoding takes (objects, arrays, strings, booleans,
// integers); a detail with a fractional number is refused.
func normalizeDetail(d map[string]any) (map[string]any, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("store: audit detail: %w", err)
	}
	v, err := decodeJSON(b)
	if err != nil {
		return nil, fmt.Errorf("store: audit detail: %w", err)
	}
	if _, err := canonicalJSON(v); err != nil {
		return nil, fmt.Errorf("store: audit detail: %w", err)
	}
	return v.(map[string]any), nil
}
