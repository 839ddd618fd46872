package workflow

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
)

// Store is what the engine needs of the policy store; *store.Store has it.
type Store interface {
	CreateOperation(ctx context.Context, n store.NewOperation, owner string, lease time.Duration) (store.Operation, error)
	GetOperation(ctx context.Context, id string) (store.Operation, error)
	ListOperations(ctx context.Context, q store.OperationQuery) ([]store.Operation, error)
	ClaimOperations(ctx context.Context, owner string, lease time.Duration, limit int) ([]store.Operation, error)
	RenewLease(ctx context.Context, id, owner string, lease time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, id, owner string) error
	SaveOperation(ctx context.Context, id, owner string, u store.OperationUpdate) (bool, error)
	FinishOperation(ctx context.Context, id, owner string, u store.OperationUpdate, auditDetail map[string]any) (store.Operation, error)
	RequestCancel(ctx context.Context, id string) (store.Operation, error)
}

var _ Store = (*store.Store)(nil)

// Defaults of Options.
const (
	DefaultLease            = 30 * time.Second
	DefaultMaxAttempts      = 3
	DefaultRetryBackoff     = time.Second
	DefaultMaxRetryBackoff  = 30 * time.Second
	DefaultProgressInterval = 500 * time.Millisecond
	DefaultMaxConcurrent    = 4
)

// Options configure an Engine.
type Options struct {
	Store Store
	Kinds []Kind
	// Owner names this control plane in leases; default host/pid/random.
	Owner string
	// Lease is how long an operation stays with a control plane that
	// stops renewing it (DefaultLease); it is renewed every Lease/3, and
	// expired leases are looked for as often.
	Lease time.Duration
	// ClaimInterval, when shorter than Lease/3, is how often expired
	// leases are looked for (and leases renewed) instead.
	ClaimInterval time.Duration
	// MaxAttempts is how often a step before the point of no return is
	// tried before the operation is compensated (DefaultMaxAttempts).
	MaxAttempts int
	// RetryBackoff is the first wait between attempts, doubled each time
	// up to MaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// ProgressInterval bounds how often progress is written.
	ProgressInterval time.Duration
	// MaxConcurrent bounds the operations this control plane runs at once.
	MaxConcurrent int
	Logger        *slog.Logger
}

// Errors of the Engine; compare with errors.Is.
var (
	// ErrUnknownKind: no Kind of that name.
	ErrUnknownKind = errors.New("unknown operation kind")
	// ErrInvalidParams: the Kind refused the parameters.
	ErrInvalidParams = errors.New("invalid operation parameters")
	// ErrPastPivot: cancel was asked of an operation past its point of
	// no return.
	ErrPastPivot = errors.New("the operation is past its point of no return and cannot be cancelled")
)

// Engine runs operations. Start creates one and runs it at once if Run is
// running; Run also takes up operations other control planes left.
type Engine struct {
	opts  Options
	kinds map[string]Kind
	log   *slog.Logger

	mu      sync.Mutex
	ctx     context.Context // Run's; nil when Run is not running
	running map[string]*execution
	wg      sync.WaitGroup
}

// New returns an Engine; call Run to start it.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, errors.New("workflow: no store")
	}
	if opts.Owner == "" {
		host, _ := os.Hostname()
		opts.Owner = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), randomHex(4))
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.Lease, DefaultLease)
	def(&opts.RetryBackoff, DefaultRetryBackoff)
	def(&opts.MaxRetryBackoff, DefaultMaxRetryBackoff)
	def(&opts.ProgressInterval, DefaultProgressInterval)
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = DefaultMaxConcurrent
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{opts: opts, kinds: make(map[string]Kind), log: opts.Logger, running: make(map[string]*execution)}
	for _, k := range opts.Kinds {
		if k.Name == "" || k.Steps == nil {
			return nil, fmt.Errorf("workflow: kind %q has no name or no steps", k.Name)
		}
		if _, dup := e.kinds[k.Name]; dup {
			return nil, fmt.Errorf("workflow: kind %q defined twice", k.Name)
		}
		e.kinds[k.Name] = k
	}
	return e, nil
}

// Owner is the name this engine holds leases under.
func (e *Engine) Owner() string { return e.opts.Owner }

// Kind returns the kind of that name.
func (e *Engine) Kind(name string) (Kind, bool) {
	k, ok := e.kinds[name]
	return k, ok
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewID returns a fresh operation id: "op-" and 16 hex digits.
func NewID() string { return "op-" + randomHex(8) }

// Start creates an operation of kind for tenant, attributed to actor, with
// params (JSON), and runs it now if the engine is running (else the next
// engine to poll takes it up). It fails with ErrUnknownKind,
// ErrInvalidParams (wrapping the kind's reason) or store.ErrOperationActive.
func (e *Engine) Start(ctx context.Context, kind, tenant, actor string, params json.RawMessage) (store.Operation, error) {
	k, ok := e.kinds[kind]
	if !ok {
		return store.Operation{}, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	if len(params) == 0 {
		params = json.RawMessage("{}")
	}
	steps, err := k.Steps(params)
	if err != nil {
		return store.Operation{}, fmt.Errorf("%w: %w", ErrInvalidParams, err)
	}
	rec := record{Steps: make([]StepRecord, len(steps))}
	for i, s := range steps {
		rec.Steps[i] = StepRecord{Name: s.Name, Status: StepPending, Forward: s.Forward}
	}
	recJSON, err := json.Marshal(rec)
	if err != nil {
		return store.Operation{}, err
	}
	audit := map[string]any{}
	if k.Summary != nil {
		audit["params"] = k.Summary(params)
	}
	op, err := e.opts.Store.CreateOperation(ctx, store.NewOperation{
		ID: NewID(), Kind: kind, Tenant: tenant, Actor: actor, Params: params, Steps: recJSON, AuditDetail: audit,
	}, e.opts.Owner, e.opts.Lease)
	if err != nil {
		return store.Operation{}, err
	}
	e.log.Info("operation started", "operation", op.ID, "kind", kind, "tenant", tenant, "actor", actor)
	if !e.launch(op) {
		// Not running here: release it so that a running engine takes it.
		_ = e.opts.Store.ReleaseLease(context.WithoutCancel(ctx), op.ID, e.opts.Owner)
	}
	return op, nil
}

// Get returns an operation.
func (e *Engine) Get(ctx context.Context, id string) (store.Operation, error) {
	return e.opts.Store.GetOperation(ctx, id)
}

// List returns operations, newest first.
func (e *Engine) List(ctx context.Context, q store.OperationQuery) ([]store.Operation, error) {
	return e.opts.Store.ListOperations(ctx, q)
}

// Cancel asks an operation to stop: the control plane running it undoes
// what it did and ends it cancelled. store.ErrFinished when it has already
// finished, ErrPastPivot when it is past its point of no return (it goes
// on to its end).
func (e *Engine) Cancel(ctx context.Context, id string) (store.Operation, error) {
	op, err := e.opts.Store.GetOperation(ctx, id)
	if err != nil {
		return op, err
	}
	if !op.Active() {
		return op, fmt.Errorf("%w: operation %s is %s", store.ErrFinished, id, op.State)
	}
	if rec, err := decodeRecord(op.Steps); err == nil && pastPivot(rec) {
		return op, fmt.Errorf("%w (operation %s)", ErrPastPivot, id)
	}
	op, err = e.opts.Store.RequestCancel(ctx, id)
	if err != nil {
		return op, err
	}
	// The runner hears of it at its next lease renewal or save; if it
	// runs here, tell it now.
	e.mu.Lock()
	ex := e.running[id]
	e.mu.Unlock()
	if ex != nil {
		ex.requestCancel()
	}
	return op, nil
}

// pastPivot reports whether a forward step has started.
func pastPivot(rec record) bool {
	for _, s := range rec.Steps {
		if s.Forward && s.Status != StepPending {
			return true
		}
	}
	return false
}

func decodeRecord(b json.RawMessage) (record, error) {
	var rec record
	err := json.Unmarshal(b, &rec)
	return rec, err
}

// Steps decodes an operation's step records (for the API).
func Steps(op store.Operation) ([]StepRecord, error) {
	rec, err := decodeRecord(op.Steps)
	return rec.Steps, err
}

// Run takes up operations whose lease expired and renews the leases of
// those running here, until ctx ends; then it stops the operations
// running here (each releases its lease for another control plane to
// resume at once) and returns when they have stopped.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.ctx != nil {
		e.mu.Unlock()
		return errors.New("workflow: engine already running")
	}
	e.ctx = ctx
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.ctx = nil
		e.mu.Unlock()
		e.wg.Wait()
	}()
	every := e.opts.Lease / 3
	if c := e.opts.ClaimInterval; c > 0 && c < every {
		every = c
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		e.claim(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		e.renew(ctx)
	}
}

// claim takes up expired operations, as many as there is room for.
func (e *Engine) claim(ctx context.Context) {
	e.mu.Lock()
	room := e.opts.MaxConcurrent - len(e.running)
	e.mu.Unlock()
	if room <= 0 {
		return
	}
	ops, err := e.opts.Store.ClaimOperations(ctx, e.opts.Owner, e.opts.Lease, room)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("cannot look for operations to resume", "error", err)
		}
		return
	}
	for _, op := range ops {
		e.log.Info("resuming operation", "operation", op.ID, "kind", op.Kind, "tenant", op.Tenant, "state", op.State, "step", op.Step, "claims", op.Claims)
		if !e.launch(op) {
			_ = e.opts.Store.ReleaseLease(context.WithoutCancel(ctx), op.ID, e.opts.Owner)
		}
	}
}

// renew extends the lease of every operation running here.
func (e *Engine) renew(ctx context.Context) {
	e.mu.Lock()
	exs := make([]*execution, 0, len(e.running))
	for _, ex := range e.running {
		exs = append(exs, ex)
	}
	e.mu.Unlock()
	for _, ex := range exs {
		cancel, err := e.opts.Store.RenewLease(ctx, ex.op.ID, e.opts.Owner, e.opts.Lease)
		switch {
		case errors.Is(err, store.ErrLeaseLost):
			ex.loseLease()
		case err != nil:
			if ctx.Err() == nil {
				e.log.Warn("cannot renew operation lease", "operation", ex.op.ID, "error", err)
			}
		case cancel:
			ex.requestCancel()
		}
	}
}

// launch runs op in a goroutine of the engine's, if the engine is running
// and op is not already running here.
func (e *Engine) launch(op store.Operation) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil || e.ctx.Err() != nil {
		return false
	}
	if _, dup := e.running[op.ID]; dup {
		return true
	}
	ex, err := e.newExecution(op)
	if err != nil {
		e.log.Error("cannot run operation", "operation", op.ID, "kind", op.Kind, "error", err)
		// Leave it claimed: it cannot run anywhere until this is fixed,
		// and retrying it every poll would only repeat the error.
		return true
	}
	e.running[op.ID] = ex
	runCtx := e.ctx
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			e.mu.Lock()
			delete(e.running, op.ID)
			e.mu.Unlock()
		}()
		ex.run(runCtx)
	}()
	return true
}
