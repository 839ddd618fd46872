package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Step is one idempotent step of an operation and its compensation.
type Step struct {
	// Name identifies the step in the operation's record ("suspend",
	// "delete_rows"); unique within a kind.
	Name string
	// Do runs the step. It must be idempotent (see the package
	// documentation).
	Do func(ctx context.Context, r *Run) error
	// Undo compensates Do, which may have run wholly, in part or not at
	// all; nil when there is nothing to undo. It must be idempotent.
	Undo func(ctx context.Context, r *Run) error
	// Forward marks a point of no return: once this step has started, the
	// operation is never compensated; failures are retried until they
	// pass, and cancel is refused.
	Forward bool
}

// Kind is one kind of operation.
type Kind struct {
	// Name is the kind's name ("provision"), as the API and the audit
	// trail show it.
	Name string
	// Steps builds the operation's steps from its parameters, or refuses
	// parameters that are not acceptable (the error is shown to the
	// caller). A resumed operation's steps are rebuilt from the same
	// parameters: Steps must return the same sequence for them.
	Steps func(params json.RawMessage) ([]Step, error)
	// Summary returns what the audit trail and the API show of the
	// parameters; nil shows none. It must leave out secrets.
	Summary func(params json.RawMessage) map[string]any
}

// Step statuses in an operation's record.
const (
	StepPending = "pending"
	StepRunning = "running"
	StepDone    = "done"
	StepFailed  = "failed"
	StepUndoing = "undoing"
	StepUndone  = "undone"
)

// StepRecord is one step's stored state.
type StepRecord struct {
	Name       string          `json:"name"`
	Status     string          `json:"status"`
	Forward    bool            `json:"forward,omitempty"`
	Attempts   int             `json:"attempts,omitempty"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Error      string          `json:"error,omitempty"`
	Done       int64           `json:"done,omitempty"`
	Total      int64           `json:"total,omitempty"`
	Message    string          `json:"message,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

// record is the operation's steps column.
type record struct {
	Steps []StepRecord `json:"steps"`
	// Cause says why an operation compensates: "failure" or "cancel".
	Cause string `json:"cause,omitempty"`
}

// Causes of compensation.
const (
	causeFailure = "failure"
	causeCancel  = "cancel"
)

// permanentError is an error that retrying will not fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying the step will not fix (bad
// input, a conflict): the operation is compensated at once, without the
// retries Options.MaxAttempts allows.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Run is what a step sees of its operation.
type Run struct {
	// ID, Kind, Tenant and Actor are the operation's.
	ID, Kind, Tenant, Actor string

	ex  *execution
	idx int
	log *slog.Logger
}

// Params decodes the operation's parameters into v.
func (r *Run) Params(v any) error {
	if err := json.Unmarshal(r.ex.op.Params, v); err != nil {
		return Permanent(fmt.Errorf("operation parameters: %w", err))
	}
	return nil
}

// Log is the step's logger (operation, kind, tenant and step attached).
func (r *Run) Log() *slog.Logger { return r.log }

// Load decodes the step's saved data into v and reports whether there was
// any.
func (r *Run) Load(v any) (bool, error) {
	d := r.ex.rec.Steps[r.idx].Data
	if len(d) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(d, v); err != nil {
		return false, fmt.Errorf("step %s data: %w", r.ex.rec.Steps[r.idx].Name, err)
	}
	return true, nil
}

// Save stores v as the step's data, durably, before it returns: a step
// resumed after a crash finds it with Load.
func (r *Run) Save(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("step data: %w", err)
	}
	r.ex.mu.Lock()
	r.ex.rec.Steps[r.idx].Data = b
	r.ex.mu.Unlock()
	return r.ex.save(ctx)
}

// SetResult sets one field of the operation's result (shown by the API and
// recorded in the end audit entry); it is stored with the next save.
func (r *Run) SetResult(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("result %s: %w", key, err)
	}
	r.ex.mu.Lock()
	r.ex.result[key] = b
	r.ex.mu.Unlock()
	return nil
}

// Result decodes one field of the operation's result into v and reports
// whether it was set (by this step or an earlier one, in this run or
// before a crash).
func (r *Run) Result(key string, v any) (bool, error) {
	r.ex.mu.Lock()
	b, ok := r.ex.result[key]
	r.ex.mu.Unlock()
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(b, v)
}

// Progress reports how far the step is: done of total (0 when unknown)
// and a short message. It is stored at most every
// Options.ProgressInterval; it fails when the lease is lost.
func (r *Run) Progress(ctx context.Context, done, total int64, msg string) error {
	r.ex.mu.Lock()
	s := &r.ex.rec.Steps[r.idx]
	s.Done, s.Total, s.Message = done, total, msg
	due := time.Since(r.ex.lastSave) >= r.ex.eng.opts.ProgressInterval
	r.ex.mu.Unlock()
	if !due {
		return nil
	}
	return r.ex.save(ctx)
}
