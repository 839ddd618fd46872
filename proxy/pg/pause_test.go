package pg_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
)

func pauseSpec(paused bool) policy.Spec {
	return policy.Spec{Tenants: []policy.TenantSpec{
		{ID: "acme", Passwords: []string{acmeSecret}, Paused: paused},
		{ID: "globex", Passwords: []string{globexSecret}},
	}}
}

// TestPolicyPause: a policy pausing acme holds its new transactions
// (globex runs on), WaitPaused returns only once acme's transaction in
// progress has ended, and a policy without the pause lets the held
// transaction run.
func TestPolicyPause(t *testing.T) {
	p := startProxy(t, upstream(t), nil)
	ctx := ctxT(t, 60*time.Second)
	inTx := p.connect(t, p.acmeURL())
	held := p.connect(t, p.acmeURL())
	globex := p.connect(t, p.url("globex", globexSecret))
	tx, err := inTx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	p.swap(mustCompile(t, pauseSpec(true)))
	drained := make(chan error, 1)
	go func() { drained <- p.srv.WaitPaused(ctx) }()
	queried := make(chan error, 1)
	go func() {
		var one int
		queried <- held.QueryRow(ctx, "SELECT 1").Scan(&one)
	}()
	var n int
	if err := globex.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatalf("globex while acme is paused: %v", err)
	}
	// The transaction in progress goes on and holds the drain.
	if _, err := tx.Exec(ctx, "SELECT 2"); err != nil {
		t.Fatalf("acme's transaction in progress when paused: %v", err)
	}
	select {
	case err := <-drained:
		t.Fatalf("WaitPaused returned (%v) while acme's transaction is open", err)
	case err := <-queried:
		t.Fatalf("acme's new transaction ran while paused: %v", err)
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("WaitPaused after the commit: %v", err)
	}
	select {
	case err := <-queried:
		t.Fatalf("acme's new transaction ran while paused: %v", err)
	default:
	}
	// The console's RESUME does not lift a pause the policy holds; a
	// policy without it does.
	p.swap(mustCompile(t, pauseSpec(false)))
	if err := <-queried; err != nil {
		t.Fatalf("acme's held transaction after the pause: %v", err)
	}
	if err := inTx.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("acme after the pause: %v", err)
	}
}

// TestPolicyPauseDrainTimeout: a transaction that does not end within the
// pause drain timeout is ended (FATAL 57P01, rolled back), so that the
// version is accepted with nothing of the tenant in progress.
func TestPolicyPauseDrainTimeout(t *testing.T) {
	p := startProxy(t, upstream(t), func(c *proxypg.Config) { c.PauseDrainTimeout = 200 * time.Millisecond })
	ctx := ctxT(t, 60*time.Second)
	c := p.connect(t, p.acmeURL())
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO items (tenant, name) VALUES ('acme', 'never committed')"); err != nil {
		t.Fatal(err)
	}
	p.swap(mustCompile(t, pauseSpec(true)))
	if err := p.srv.WaitPaused(ctx); err != nil {
		t.Fatalf("WaitPaused: %v", err)
	}
	_, err = tx.Exec(ctx, "SELECT 1")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Fatalf("acme's transaction past the drain timeout: %v, want 57P01", err)
	}
	p.swap(mustCompile(t, pauseSpec(false)))
	other, err := pgx.Connect(ctx, p.acmeURL())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	var n int
	if err := other.QueryRow(ctx, "SELECT count(*) FROM items WHERE name = 'never committed'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the ended transaction's insert: %d rows (%v)", n, err)
	}
}
