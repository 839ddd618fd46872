package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestPoolExhaustion: with every server connection held inside a
// transaction, another client waits the configured time, then gets 53300;
// it succeeds once a connection is free.
func TestPoolExhaustion(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) {
		c.PoolSize = 1
		c.PoolWaitTimeout = 300 * time.Millisecond
	})
	ctx := ctxT(t, 20*time.Second)
	holder := p.connect(t, p.acmeURL())
	other := p.connect(t, p.url("globex", globexSecret))
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	_, err = other.Exec(ctx, "SELECT 1")
	pe := assertSQLState(t, err, "53300")
	if !strings.Contains(pe.Message, "no server connection available") {
		t.Fatalf("message %q", pe.Message)
	}
	if got := p.metric(t, "tenantguard_pg_errors_total", map[string]string{"tenant": "globex", "class": "53"}); got != 1 {
		t.Fatalf("errors_total{class=53} = %v", got)
	}
	// The waiting client's connection survives; the holder is unaffected.
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := other.QueryRow(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("after release: %v", err)
	}
	// A queued waiter gets the connection as soon as it is released.
	tx, err = holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := other.Exec(ctx, "SELECT 1")
		res <- err
	}()
	harness.Eventually(t, 5*time.Second, func() error {
		if p.metric(t, "tenantguard_pg_pool_wait_seconds", nil) < 4 {
			return errors.New("waiter not queued yet")
		}
		return nil
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("queued waiter: %v", err)
	}
}

// TestCancelReachesOnlyItsClient: a cancel stops the right client's
// pg_sleep and nothing else; a stale or forged cancel reaches nothing.
func TestCancelReachesOnlyItsClient(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.PoolSize = 2 })
	ctx := ctxT(t, 30*time.Second)
	victim := p.connect(t, p.acmeURL())
	bystander := p.connect(t, p.url("globex", globexSecret))

	// A stale cancel (nothing running) must not hit the next query.
	if err := victim.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := victim.QueryRow(ctx, "SELECT 1 FROM pg_sleep(0.3)").Scan(&n); err != nil {
		t.Fatalf("stale cancel reached a later query: %v", err)
	}

	bystanderDone := make(chan error, 1)
	go func() {
		_, err := bystander.Exec(ctx, "SELECT pg_sleep(1.5)")
		bystanderDone <- err
	}()
	victimDone := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := victim.Exec(ctx, "SELECT pg_sleep(60)")
		victimDone <- err
	}()
	// Wait until both are really running on the server.
	harness.Eventually(t, 10*time.Second, func() error {
		return countRunning(ctx, pg, "pg_sleep(", 2)
	})
	// A cancel with the right pid and a wrong secret is ignored.
	if err := sendCancel(ctx, p.addr, victim.PgConn().PID(), 12345); err != nil {
		t.Fatal(err)
	}
	if err := victim.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	err := <-victimDone
	assertSQLState(t, err, "57014")
	if time.Since(start) > 30*time.Second {
		t.Fatalf("cancel took %v", time.Since(start))
	}
	if err := <-bystanderDone; err != nil {
		t.Fatalf("bystander was affected: %v", err)
	}
	if err := victim.QueryRow(ctx, "SELECT 5").Scan(&n); err != nil || n != 5 {
		t.Fatalf("victim after cancel: %v", err)
	}
}

// countRunning checks, directly on the upstream, that want backends are
// running a query containing text.
func countRunning(ctx context.Context, pg *pgcluster.Cluster, text string, want int) error {
	c, err := pgx.Connect(ctx, pg.AdminURL("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()", text).Scan(&n); err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("%d backends running %q, want %d", n, text, want)
	}
	return nil
}

// sendCancel sends a raw CancelRequest to the proxy.
func sendCancel(ctx context.Context, addr string, pid, secret uint32) error {
	var d netDialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := []byte{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e,
		byte(pid >> 24), byte(pid >> 16), byte(pid >> 8), byte(pid),
		byte(secret >> 24), byte(secret >> 16), byte(secret >> 8), byte(secret)}
	_, err = c.Write(msg)
	return err
}

// TestBreakerOpensAndRecovers stops the upstream: clients get fast
// 08006/57P03 errors, the breaker opens, and work resumes when the upstream
// is back. It runs on its own cluster so the package's shared one stays up.
func TestBreakerOpensAndRecovers(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	pg, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	setupDatabase(t, pg)
	p := startProxy(t, pg, func(c *proxypgConfig) {
		c.BreakerFailures = 3
		c.BreakerOpenTime = 300 * time.Millisecond
	})
	c := p.connect(t, p.acmeURL())
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	open := false
	var sawOpenErr bool
	for i := 0; i < 50 && !open; i++ {
		_, err := c.Exec(ctx, "SELECT 1")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code == "57P01" {
			// The server connection the client held was terminated by the
			// shutdown (57P01 forwarded, or the connection simply closed):
			// that ends the client session, as in PostgreSQL.
			c = p.connectRetry(t, ctx)
			continue
		}
		if pe.Code != "08006" && pe.Code != "57P03" {
			t.Fatalf("want 08006 or 57P03, got %s: %s", pe.Code, pe.Message)
		}
		if pe.Code == "57P03" {
			sawOpenErr = true
		}
		open = p.metric(t, "tenantguard_pg_breaker_state", nil) == 2
	}
	if !open || !sawOpenErr && p.metric(t, "tenantguard_pg_breaker_state", nil) != 2 {
		t.Fatalf("breaker did not open")
	}
	// While open, errors are immediate and name the breaker.
	_, err = c.Exec(ctx, "SELECT 1")
	pe := assertSQLState(t, err, "57P03")
	if !strings.Contains(pe.Message, "circuit breaker") {
		t.Fatalf("message %q", pe.Message)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		return c.QueryRow(ctx, "SELECT 1").Scan(&n)
	})
	if got := p.metric(t, "tenantguard_pg_breaker_state", nil); got != 0 {
		t.Fatalf("breaker state %v after recovery", got)
	}
}

// connectRetry connects to the proxy, which may refuse while the upstream is down.
func (p *proxy) connectRetry(t *testing.T, ctx context.Context) *pgx.Conn {
	t.Helper()
	var c *pgx.Conn
	var err error
	for i := 0; i < 3; i++ {
		c, err = pgx.Connect(ctx, p.acmeURL())
		if err == nil {
			t.Cleanup(func() { c.Close(context.Background()) })
			return c
		}
	}
	t.Fatalf("reconnect: %v", err)
	return nil
}

// TestDrain: Shutdown refuses new clients, lets a transaction in flight
// commit, then ends that session with 57P01.
func TestDrain(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, nil)
	ctx := ctxT(t, 30*time.Second)
	busy := p.connect(t, p.acmeURL())
	idle := p.connect(t, p.url("globex", globexSecret))
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("drain-test-%d", time.Now().UnixNano())
	if _, err := tx.Exec(ctx, "INSERT INTO items (tenant, name) VALUES ('acme', $1)", marker); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	shutdownErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdownErr <- p.srv.Shutdown(sctx)
	}()
	// New clients are refused once draining starts.
	harness.Eventually(t, 5*time.Second, func() error {
		c, err := pgx.Connect(ctx, p.acmeURL())
		if err == nil {
			c.Close(ctx)
			return errors.New("still accepting")
		}
		return nil
	})
	// The idle client is told and closed.
	_, err = idle.Exec(ctx, "SELECT 1")
	if err == nil {
		t.Fatal("idle client still served after drain began")
	}
	// The transaction in flight finishes.
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit during drain: %v", err)
	}
	wg.Wait()
	if err := <-shutdownErr; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	var n int
	c, err := pgx.Connect(ctx, pg.AdminURL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.QueryRow(ctx, "SELECT count(*) FROM items WHERE name = $1", marker).Scan(&n); err != nil || n != 1 {
		t.Fatalf("committed row: %d %v", n, err)
	}
}

// TestDrainTellsEveryClient: during a drain, clients in the middle of
// transactions finish them, and every client is then told why it is being
// disconnected (57P01), never closed bare: those that finish in time, and
// one whose transaction is still open at the drain deadline, which is
// rolled back.
func TestDrainTellsEveryClient(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, nil)
	ctx := ctxT(t, 60*time.Second)
	marker := fmt.Sprintf("drain-all-%d", time.Now().UnixNano())

	const workers = 8
	var started sync.WaitGroup
	results := make(chan error, workers)
	stop := make(chan struct{})
	for i := 0; i < workers; i++ {
		c := p.connect(t, p.acmeURL())
		started.Add(1)
		go func() {
			first := true
			for {
				tx, err := c.Begin(ctx)
				if err == nil {
					_, err = tx.Exec(ctx, "INSERT INTO items (tenant, name) VALUES ('acme', $1)", marker)
				}
				if err == nil {
					_, err = tx.Exec(ctx, "SELECT pg_sleep(0.02)")
				}
				if err == nil {
					err = tx.Commit(ctx)
				}
				if first {
					started.Done()
					first = false
				}
				if err != nil {
					results <- err
					return
				}
				select {
				case <-stop:
				default:
				}
			}
		}()
	}
	started.Wait()
	stuck := p.connect(t, p.url("globex", globexSecret))
	stuckTx, err := stuck.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stuckTx.Exec(ctx, "INSERT INTO items (tenant, name) VALUES ('globex', $1)", marker+"-stuck"); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown with a transaction open past the deadline: %v, want the deadline", err)
	}
	close(stop)
	for i := 0; i < workers; i++ {
		err := <-results
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57P01" {
			t.Errorf("worker %d ended with %v, want FATAL 57P01", i, err)
		}
	}
	_, err = stuckTx.Exec(ctx, "SELECT 1")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Errorf("transaction open at the deadline: %v, want FATAL 57P01", err)
	}
	admin, err := pgx.Connect(ctx, pg.AdminURL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var n int
	harness.Eventually(t, 10*time.Second, func() error {
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM items WHERE name = $1", marker+"-stuck").Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("the transaction cut at the deadline left %d rows", n)
		}
		return nil
	})
}
