package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
)

// errCancelAsked is the cause a step's context is cancelled with when
// cancel is asked of its operation.
var errCancelAsked = errors.New("operation cancelled")

// stateWriteTimeout bounds a write of the operation's own state, which is
// done even while the engine stops (so that what a step did is recorded).
const stateWriteTimeout = 10 * time.Second

// execution is one operation running in this control plane.
type execution struct {
	eng   *Engine
	op    store.Operation // as claimed: ID, Kind, Tenant, Actor, Params
	steps []Step
	log   *slog.Logger

	mu          sync.Mutex
	rec         record
	result      map[string]json.RawMessage
	state       string
	step        int
	errText     string
	lastSave    time.Time
	stepCancel  context.CancelCauseFunc // the running step's, nil between steps
	stepGuarded bool                    // the running step is not stopped by cancel
	cancelAsked bool
	lost        bool
}

func (e *Engine) newExecution(op store.Operation) (*execution, error) {
	k, ok := e.kinds[op.Kind]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, op.Kind)
	}
	steps, err := k.Steps(op.Params)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidParams, err)
	}
	rec, err := decodeRecord(op.Steps)
	if err != nil {
		return nil, fmt.Errorf("stored steps: %w", err)
	}
	if len(rec.Steps) != len(steps) {
		return nil, fmt.Errorf("stored steps: %d recorded, the kind has %d", len(rec.Steps), len(steps))
	}
	for i := range steps {
		if rec.Steps[i].Name != steps[i].Name {
			return nil, fmt.Errorf("stored steps: step %d is %q, the kind's is %q", i, rec.Steps[i].Name, steps[i].Name)
		}
	}
	result := map[string]json.RawMessage{}
	if len(op.Result) > 0 {
		if err := json.Unmarshal(op.Result, &result); err != nil {
			return nil, fmt.Errorf("stored result: %w", err)
		}
	}
	return &execution{
		eng: e, op: op, steps: steps, rec: rec, result: result,
		state: op.State, step: op.Step, errText: op.Error, cancelAsked: op.CancelRequested,
		log: e.log.With("operation", op.ID, "kind", op.Kind, "tenant", op.Tenant),
	}, nil
}

func (ex *execution) requestCancel() {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.cancelAsked = true
	if ex.stepCancel != nil && !ex.stepGuarded {
		ex.stepCancel(errCancelAsked)
	}
}

func (ex *execution) loseLease() {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if !ex.lost {
		ex.log.Warn("operation lease lost: another control plane has it")
	}
	ex.lost = true
	if ex.stepCancel != nil {
		ex.stepCancel(store.ErrLeaseLost)
	}
}

func (ex *execution) isLost() bool {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.lost
}

func (ex *execution) cancelled() bool {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.cancelAsked
}

// update is the state to store, under ex.mu.
func (ex *execution) update() (store.OperationUpdate, error) {
	steps, err := json.Marshal(ex.rec)
	if err != nil {
		return store.OperationUpdate{}, err
	}
	result, err := json.Marshal(ex.result)
	if err != nil {
		return store.OperationUpdate{}, err
	}
	return store.OperationUpdate{State: ex.state, Step: ex.step, Steps: steps, Error: ex.errText, Result: result}, nil
}

// save stores the operation's state now.
func (ex *execution) save(ctx context.Context) error {
	ex.mu.Lock()
	u, err := ex.update()
	ex.lastSave = time.Now()
	ex.mu.Unlock()
	if err != nil {
		return err
	}
	cancel, err := ex.eng.opts.Store.SaveOperation(ctx, ex.op.ID, ex.eng.opts.Owner, u)
	if errors.Is(err, store.ErrLeaseLost) {
		ex.loseLease()
		return err
	}
	if err != nil {
		return err
	}
	if cancel {
		ex.requestCancel()
	}
	return nil
}

// saveState stores a transition of the runner's own, retrying while the
// store is unreachable; it gives up when the lease is lost or, once the
// engine stops, after stateWriteTimeout.
func (ex *execution) saveState(ctx context.Context) error {
	backoff := ex.eng.opts.RetryBackoff
	for {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateWriteTimeout)
		err := ex.save(sctx)
		cancel()
		if err == nil || errors.Is(err, store.ErrLeaseLost) || ctx.Err() != nil {
			return err
		}
		ex.log.Warn("cannot store the operation's state; retrying", "error", err)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, ex.eng.opts.MaxRetryBackoff)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func now() *time.Time {
	t := time.Now().UTC().Truncate(time.Millisecond)
	return &t
}

// run drives the operation until it finishes, the engine stops (ctx) or
// the lease is lost.
func (ex *execution) run(ctx context.Context) {
	defer func() {
		if ctx.Err() != nil && !ex.isLost() {
			// Stopping: hand the operation over at once.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateWriteTimeout)
			defer cancel()
			if err := ex.eng.opts.Store.ReleaseLease(rctx, ex.op.ID, ex.eng.opts.Owner); err != nil {
				ex.log.Warn("cannot release the operation's lease; another control plane takes it when it expires", "error", err)
			}
		}
	}()
	for ctx.Err() == nil && !ex.isLost() {
		ex.mu.Lock()
		state, step := ex.state, ex.step
		ex.mu.Unlock()
		switch state {
		case store.OpRunning:
			if step >= len(ex.steps) {
				ex.finish(ctx, store.OpSucceeded)
				return
			}
			if ex.cancelled() && !pastPivot(ex.rec) {
				ex.startCompensation(ctx, causeCancel, step, "")
				continue
			}
			ex.forward(ctx, step)
		case store.OpCompensating:
			if ex.compensate(ctx) {
				final := store.OpFailed
				if ex.rec.Cause == causeCancel {
					final = store.OpCancelled
				}
				ex.finish(ctx, final)
			}
			return
		default:
			return
		}
	}
}

// callStep runs f with panics turned into errors: a bug in one step fails
// that operation, not the control plane.
func callStep(ctx context.Context, f func(context.Context, *Run) error, r *Run) (err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("step panicked", "panic", p, "stack", string(debug.Stack()))
			err = Permanent(fmt.Errorf("step panicked: %v", p))
		}
	}()
	return f(ctx, r)
}

// attempt runs f for step i in a context that cancel (unless guarded)
// and a lost lease stop.
func (ex *execution) attempt(ctx context.Context, i int, guarded bool, f func(context.Context, *Run) error) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ex.mu.Lock()
	ex.stepCancel, ex.stepGuarded = cancel, guarded
	if ex.lost {
		cancel(store.ErrLeaseLost)
	} else if ex.cancelAsked && !guarded {
		cancel(errCancelAsked)
	}
	ex.mu.Unlock()
	r := &Run{ID: ex.op.ID, Kind: ex.op.Kind, Tenant: ex.op.Tenant, Actor: ex.op.Actor, ex: ex, idx: i,
		log: ex.log.With("step", ex.steps[i].Name)}
	err := callStep(sctx, f, r)
	ex.mu.Lock()
	ex.stepCancel = nil
	ex.mu.Unlock()
	if err == nil && sctx.Err() != nil {
		// The step ignored its context; its work stands.
		return nil
	}
	return err
}

// forward runs step i until it succeeds, or starts compensation.
func (ex *execution) forward(ctx context.Context, i int) {
	st := ex.steps[i]
	backoff := ex.eng.opts.RetryBackoff
	for ctx.Err() == nil && !ex.isLost() {
		ex.mu.Lock()
		rec := &ex.rec.Steps[i]
		guarded := st.Forward || pastPivot(ex.rec)
		rec.Status, rec.Error = StepRunning, ""
		rec.Attempts++
		if rec.StartedAt == nil {
			rec.StartedAt = now()
		}
		attempts := rec.Attempts
		ex.mu.Unlock()
		if err := ex.saveState(ctx); err != nil {
			return
		}
		ex.log.Info("step started", "step", st.Name, "attempt", attempts)
		err := ex.attempt(ctx, i, guarded, st.Do)
		if err == nil {
			ex.mu.Lock()
			rec.Status, rec.FinishedAt = StepDone, now()
			if rec.Total > 0 {
				rec.Done = rec.Total
			}
			ex.step = i + 1
			ex.mu.Unlock()
			ex.log.Info("step done", "step", st.Name)
			_ = ex.saveState(ctx)
			return
		}
		if ex.isLost() || ctx.Err() != nil {
			return // another control plane resumes it
		}
		if ex.cancelled() && !guarded {
			ex.mu.Lock()
			rec.Status, rec.Error, rec.FinishedAt = StepFailed, "interrupted by cancel: "+err.Error(), now()
			ex.mu.Unlock()
			ex.startCompensation(ctx, causeCancel, i, "")
			return
		}
		ex.mu.Lock()
		rec.Error = err.Error()
		ex.mu.Unlock()
		if !guarded && (IsPermanent(err) || attempts >= ex.eng.opts.MaxAttempts) {
			ex.log.Warn("step failed; undoing the operation", "step", st.Name, "attempt", attempts, "error", err)
			ex.mu.Lock()
			rec.Status, rec.FinishedAt = StepFailed, now()
			ex.mu.Unlock()
			ex.startCompensation(ctx, causeFailure, i, fmt.Sprintf("step %s: %v", st.Name, err))
			return
		}
		ex.log.Warn("step failed; retrying", "step", st.Name, "attempt", attempts, "error", err, "in", backoff)
		_ = ex.saveState(ctx)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, ex.eng.opts.MaxRetryBackoff)
	}
}

// startCompensation switches the operation to undoing its steps from
// step from down to the first.
func (ex *execution) startCompensation(ctx context.Context, cause string, from int, errText string) {
	ex.mu.Lock()
	ex.state, ex.step, ex.rec.Cause = store.OpCompensating, from, cause
	if errText != "" {
		ex.errText = errText
	}
	ex.mu.Unlock()
	_ = ex.saveState(ctx)
}

// compensate undoes the steps from ex.step down to the first; it reports
// whether the operation is ready to finish (false: stopped or lost, or
// finished already because an undo failed).
func (ex *execution) compensate(ctx context.Context) bool {
	for {
		if ctx.Err() != nil || ex.isLost() {
			return false
		}
		ex.mu.Lock()
		i := ex.step
		ex.mu.Unlock()
		if i < 0 {
			return true
		}
		st := ex.steps[i]
		ex.mu.Lock()
		rec := &ex.rec.Steps[i]
		skip := st.Undo == nil || rec.Status == StepPending || rec.Status == StepUndone
		if !skip {
			rec.Status = StepUndoing
		}
		ex.mu.Unlock()
		if !skip {
			if err := ex.saveState(ctx); err != nil {
				return false
			}
			if !ex.undo(ctx, i) {
				return false
			}
		}
		ex.mu.Lock()
		ex.step = i - 1
		ex.mu.Unlock()
		if err := ex.saveState(ctx); err != nil {
			return false
		}
	}
}

// undo runs step i's Undo until it succeeds or MaxAttempts have failed;
// then it finishes the operation failed, naming the step whose effects
// remain. It reports whether the step was undone.
func (ex *execution) undo(ctx context.Context, i int) bool {
	st := ex.steps[i]
	backoff := ex.eng.opts.RetryBackoff
	for attempt := 1; ; attempt++ {
		ex.log.Info("undoing step", "step", st.Name, "attempt", attempt)
		err := ex.attempt(ctx, i, true, st.Undo)
		if ex.isLost() || ctx.Err() != nil {
			return false
		}
		rec := &ex.rec.Steps[i]
		if err == nil {
			ex.mu.Lock()
			rec.Status = StepUndone
			ex.mu.Unlock()
			return true
		}
		ex.log.Warn("undoing step failed", "step", st.Name, "attempt", attempt, "error", err)
		if attempt >= ex.eng.opts.MaxAttempts {
			ex.mu.Lock()
			rec.Error = "undo: " + err.Error()
			msg := fmt.Sprintf("undoing step %s failed, its effects remain (fix, then undo by hand): %v", st.Name, err)
			if ex.errText != "" {
				msg = ex.errText + "; " + msg
			}
			ex.errText = msg
			ex.mu.Unlock()
			ex.finish(ctx, store.OpFailed)
			return false
		}
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, ex.eng.opts.MaxRetryBackoff)
	}
}

// finish ends the operation in state, with its end audit entry.
func (ex *execution) finish(ctx context.Context, state string) {
	ex.mu.Lock()
	ex.state = state
	u, err := ex.update()
	summary := make(map[string]string, len(ex.rec.Steps))
	for _, s := range ex.rec.Steps {
		summary[s.Name] = s.Status
	}
	result := make(map[string]any, len(ex.result))
	for k, v := range ex.result {
		result[k] = v
	}
	ex.mu.Unlock()
	if err != nil {
		ex.log.Error("cannot encode the operation's state", "error", err)
		return
	}
	detail := map[string]any{"steps": summary, "result": result}
	backoff := ex.eng.opts.RetryBackoff
	for {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateWriteTimeout)
		_, err := ex.eng.opts.Store.FinishOperation(sctx, ex.op.ID, ex.eng.opts.Owner, u, detail)
		cancel()
		switch {
		case err == nil:
			ex.log.Info("operation finished", "state", state, "error", u.Error)
			return
		case errors.Is(err, store.ErrLeaseLost):
			ex.loseLease()
			return
		case ctx.Err() != nil:
			return
		}
		ex.log.Warn("cannot finish the operation; retrying", "error", err)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, ex.eng.opts.MaxRetryBackoff)
	}
}
