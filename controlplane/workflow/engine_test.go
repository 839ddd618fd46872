package workflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) {
	code := harness.Run(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var dbSeq atomic.Int64

// openStore opens a store on a database of the test's own.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	pg := harness.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("cp_workflow_%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, pg.AdminURL(name), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pg.Exec(ctx, "postgres", fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", name))
	})
	p, err := policypb.ParseYAML([]byte("name: default\ntenants:\n  - id: acme\n    credentials: [\"a password\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Seed(ctx, "test", p); err != nil {
		t.Fatal(err)
	}
	return st
}

// journal records what steps did, in order.
type journal struct {
	mu  sync.Mutex
	log []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	j.log = append(j.log, s)
	j.mu.Unlock()
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.log)
}

// params of the test kind: which step fails how.
type params struct {
	FailAt    string `json:"fail_at"`    // this step's Do fails permanently
	FlakyAt   string `json:"flaky_at"`   // this step's Do fails its first attempt
	BlockAt   string `json:"block_at"`   // this step's Do blocks until its context ends
	UndoFails string `json:"undo_fails"` // this step's Undo always fails
	Forward   bool   `json:"forward"`    // step c is a point of no return
}

type fixture struct {
	j       journal
	blocked chan string // a blocking step says it has started
	flaky   sync.Map
}

func (f *fixture) kind() workflow.Kind {
	mk := func(name string, forward bool) workflow.Step {
		return workflow.Step{
			Name:    name,
			Forward: forward,
			Do: func(ctx context.Context, r *workflow.Run) error {
				var p params
				if err := r.Params(&p); err != nil {
					return err
				}
				f.j.add("do " + name)
				if err := r.Progress(ctx, 1, 2, "half way"); err != nil {
					return err
				}
				switch name {
				case p.FailAt:
					return workflow.Permanent(errors.New("boom"))
				case p.FlakyAt:
					if _, seen := f.flaky.LoadOrStore(r.ID+name, true); !seen {
						return errors.New("transient")
					}
				case p.BlockAt:
					if f.blocked == nil {
						break // blocks only in the fixture that waits for it
					}
					select {
					case f.blocked <- name:
					default:
					}
					<-ctx.Done()
					return context.Cause(ctx)
				}
				return r.SetResult(name, 1)
			},
			Undo: func(ctx context.Context, r *workflow.Run) error {
				var p params
				if err := r.Params(&p); err != nil {
					return err
				}
				f.j.add("undo " + name)
				if name == p.UndoFails {
					return errors.New("cannot undo")
				}
				return nil
			},
		}
	}
	return workflow.Kind{
		Name: "test",
		Steps: func(raw json.RawMessage) ([]workflow.Step, error) {
			var p params
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, err
			}
			return []workflow.Step{mk("a", false), mk("b", false), mk("c", p.Forward), mk("d", false)}, nil
		},
		Summary: func(raw json.RawMessage) map[string]any { return map[string]any{"test": true} },
	}
}

func newEngine(t *testing.T, st workflow.Store, f *fixture, lease time.Duration) *workflow.Engine {
	t.Helper()
	e, err := workflow.New(workflow.Options{
		Store: st, Kinds: []workflow.Kind{f.kind()}, Lease: lease,
		RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond, ProgressInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// runEngine runs e until the test ends (or stop is called).
func runEngine(t *testing.T, e *workflow.Engine) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("engine: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitState(t *testing.T, e *workflow.Engine, id string, states ...string) store.Operation {
	t.Helper()
	var op store.Operation
	harness.Eventually(t, 30*time.Second, func() error {
		var err error
		if op, err = e.Get(context.Background(), id); err != nil {
			return err
		}
		if !slices.Contains(states, op.State) {
			return fmt.Errorf("state %s (step %d, error %q)", op.State, op.Step, op.Error)
		}
		return nil
	})
	return op
}

func statuses(t *testing.T, op store.Operation) string {
	t.Helper()
	steps, err := workflow.Steps(op)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range steps {
		out = append(out, s.Name+":"+s.Status)
	}
	return strings.Join(out, " ")
}

// operationEntries returns the audit chain's operation entries for id,
// after checking that the whole chain verifies.
func operationEntries(t *testing.T, st *store.Store, id string) []map[string]any {
	t.Helper()
	ctx := context.Background()
	if _, err := st.VerifyAudit(ctx, store.VerifyFull); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	page, err := st.Audit(ctx, store.AuditQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, e := range page.Entries {
		if e.Action != store.ActionOperation {
			continue
		}
		var d map[string]any
		if err := json.Unmarshal(e.Detail, &d); err != nil {
			t.Fatal(err)
		}
		if d["operation"] == id {
			out = append(out, d)
		}
	}
	return out
}

func start(t *testing.T, e *workflow.Engine, tenant string, p params) store.Operation {
	t.Helper()
	b, _ := json.Marshal(p)
	op, err := e.Start(context.Background(), "test", tenant, "tester", b)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func TestSucceeds(t *testing.T) {
	st := openStore(t)
	f := &fixture{blocked: make(chan string, 1)}
	e := newEngine(t, st, f, 2*time.Second)
	runEngine(t, e)
	op := start(t, e, "acme", params{FlakyAt: "b"})
	op = waitState(t, e, op.ID, store.OpSucceeded)
	if got, want := f.j.get(), []string{"do a", "do b", "do b", "do c", "do d"}; !slices.Equal(got, want) {
		t.Errorf("steps ran %v, want %v", got, want)
	}
	if s := statuses(t, op); s != "a:done b:done c:done d:done" {
		t.Errorf("steps %s", s)
	}
	if op.Error != "" || op.Claims != 1 || op.FinishedAt.IsZero() || op.LeaseOwner != "" {
		t.Errorf("finished operation %+v", op)
	}
	var res map[string]int
	if err := json.Unmarshal(op.Result, &res); err != nil || len(res) != 4 {
		t.Errorf("result %s: %v", op.Result, err)
	}
	entries := operationEntries(t, st, op.ID)
	if len(entries) != 2 || entries[0]["event"] != "start" || entries[1]["event"] != "end" || entries[1]["state"] != "succeeded" {
		t.Fatalf("audit entries %v", entries)
	}
	if entries[0]["kind"] != "test" || entries[0]["tenant"] != "acme" {
		t.Errorf("start entry %v", entries[0])
	}
	// One operation per tenant at a time; other tenants are free.
	op2 := start(t, e, "acme", params{BlockAt: "a"})
	if _, err := e.Start(context.Background(), "test", "acme", "tester", []byte(`{}`)); !errors.Is(err, store.ErrOperationActive) {
		t.Errorf("second operation for acme: %v", err)
	}
	op3 := start(t, e, "globex", params{})
	waitState(t, e, op3.ID, store.OpSucceeded)
	if _, err := e.Cancel(context.Background(), op2.ID); err != nil {
		t.Fatal(err)
	}
	waitState(t, e, op2.ID, store.OpCancelled)
}

func TestFailureIsCompensated(t *testing.T) {
	st := openStore(t)
	f := &fixture{}
	e := newEngine(t, st, f, 2*time.Second)
	runEngine(t, e)
	op := start(t, e, "acme", params{FailAt: "c"})
	op = waitState(t, e, op.ID, store.OpFailed)
	if got, want := f.j.get(), []string{"do a", "do b", "do c", "undo c", "undo b", "undo a"}; !slices.Equal(got, want) {
		t.Errorf("steps ran %v, want %v", got, want)
	}
	if s := statuses(t, op); s != "a:undone b:undone c:undone d:pending" {
		t.Errorf("steps %s", s)
	}
	if op.Error != "step c: boom" {
		t.Errorf("error %q", op.Error)
	}
	entries := operationEntries(t, st, op.ID)
	if len(entries) != 2 || entries[1]["state"] != "failed" || entries[1]["error"] != "step c: boom" {
		t.Fatalf("audit entries %v", entries)
	}

	// An undo that keeps failing ends the operation failed, naming it.
	f2 := &fixture{}
	e2 := newEngine(t, st, f2, 2*time.Second)
	runEngine(t, e2)
	op = start(t, e2, "globex", params{FailAt: "c", UndoFails: "b"})
	op = waitState(t, e2, op.ID, store.OpFailed)
	if got, want := f2.j.get(), []string{"do a", "do b", "do c", "undo c", "undo b", "undo b", "undo b"}; !slices.Equal(got, want) {
		t.Errorf("steps ran %v, want %v", got, want)
	}
	if !strings.Contains(op.Error, "undoing step b failed") {
		t.Errorf("error %q", op.Error)
	}
}

func TestCancel(t *testing.T) {
	st := openStore(t)
	f := &fixture{blocked: make(chan string, 1)}
	e := newEngine(t, st, f, 2*time.Second)
	runEngine(t, e)
	op := start(t, e, "acme", params{BlockAt: "b"})
	<-f.blocked
	if _, err := e.Cancel(context.Background(), op.ID); err != nil {
		t.Fatal(err)
	}
	op = waitState(t, e, op.ID, store.OpCancelled)
	if got, want := f.j.get(), []string{"do a", "do b", "undo b", "undo a"}; !slices.Equal(got, want) {
		t.Errorf("steps ran %v, want %v", got, want)
	}
	if _, err := e.Cancel(context.Background(), op.ID); !errors.Is(err, store.ErrFinished) {
		t.Errorf("cancel of a finished operation: %v", err)
	}

	// Past the point of no return, cancel is refused and the operation
	// goes on to its end.
	f2 := &fixture{blocked: make(chan string, 1)}
	e2 := newEngine(t, st, f2, 2*time.Second)
	runEngine(t, e2)
	op = start(t, e2, "globex", params{Forward: true, FlakyAt: "d", BlockAt: "zzz"})
	op = waitState(t, e2, op.ID, store.OpSucceeded)
	if _, err := e2.Cancel(context.Background(), op.ID); !errors.Is(err, store.ErrFinished) {
		t.Errorf("cancel after the end: %v", err)
	}
}

// leakyStore is a store whose ReleaseLease does nothing: an engine that
// stops with it behaves as one killed, its leases left to expire.
type leakyStore struct{ *store.Store }

func (leakyStore) ReleaseLease(context.Context, string, string) error { return nil }

func TestTakeoverAfterLeaseExpiry(t *testing.T) {
	st := openStore(t)
	const lease = 1500 * time.Millisecond
	f := &fixture{blocked: make(chan string, 1)}
	a := newEngine(t, leakyStore{st}, f, lease)
	stopA := runEngine(t, a)
	op := start(t, a, "acme", params{BlockAt: "b"})
	<-f.blocked
	stopA() // "dies" in step b, its lease left

	held, err := st.GetOperation(context.Background(), op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if held.LeaseOwner != a.Owner() || held.State != store.OpRunning || held.Step != 1 {
		t.Fatalf("after the crash: %+v", held)
	}
	// The second engine's fixture blocks nowhere: its run of b passes.
	// Its own lease is long, so that a busy machine cannot make it miss
	// a renewal and claim the operation a third time; it still looks for
	// a's expired lease as often as a 1.5 s lease would.
	b, err := workflow.New(workflow.Options{
		Store: st, Kinds: []workflow.Kind{(&fixture{}).kind()}, Lease: time.Minute, ClaimInterval: lease / 3,
		RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond, ProgressInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, b)
	done := waitState(t, b, op.ID, store.OpSucceeded)
	if done.Claims != 2 {
		t.Errorf("claims %d, want 2", done.Claims)
	}
	if done.FinishedAt.Before(held.LeaseExpires) {
		t.Errorf("finished at %v, before a's lease expired at %v", done.FinishedAt, held.LeaseExpires)
	}
	// a's writes are fenced off now.
	if _, err := st.SaveOperation(context.Background(), op.ID, a.Owner(), store.OperationUpdate{State: store.OpRunning, Steps: done.Steps}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("stale owner's save: %v", err)
	}
	if s := statuses(t, done); s != "a:done b:done c:done d:done" {
		t.Errorf("steps %s", s)
	}
	steps, _ := workflow.Steps(done)
	if steps[1].Attempts != 2 || steps[0].Attempts != 1 {
		t.Errorf("attempts: a %d, b %d", steps[0].Attempts, steps[1].Attempts)
	}
}
