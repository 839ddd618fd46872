package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/test/harness"
)

// recoveryBound is how soon after the upstream is back the sidecar must
// serve again, without a restart: the breaker's half-open probe (open for
// 1s by default) and one dial.
const recoveryBound = 2 * time.Second

// startPGSidecar starts a sidecar for appDB at upstreamPort.
func startPGSidecar(t *testing.T, upstreamPort int, pgExtra, extra string) (listen string, sc *harness.Sidecar) {
	t.Helper()
	listen, admin := harness.FreeAddr(t), harness.FreeAddr(t)
	sc = harness.StartSidecar(t, tgBinary, admin, pgSidecarConfig(listen, admin, upstreamPort, pgExtra, extra), harness.SidecarOptions{})
	return listen, sc
}

// pgbenchScript is pgbench's mixed read/write transaction on the
// counters table.
const pgbenchScript = `\set k random(1, 1000)
BEGIN;
UPDATE counters SET n = n + 1 WHERE k = :k;
SELECT n FROM counters WHERE k = :k;
COMMIT;
`

// startPgbench runs pgbench through the sidecar as acme.
func startPgbench(t *testing.T, listen string, clients int, d time.Duration, extra ...string) *harness.Process {
	t.Helper()
	script := filepath.Join(t.TempDir(), "mixed.sql")
	if err := os.WriteFile(script, []byte(pgbenchScript), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(listen, ":")
	args := append([]string{"-n", "-c", fmt.Sprint(clients), "-j", "2", "-T", fmt.Sprint(int(d.Seconds())),
		"-f", script, "-h", host, "-p", port, "-U", "acme"}, extra...)
	args = append(args, appDB)
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Skip("pgbench not installed")
	}
	os.Setenv("PGPASSWORD", acmePass)
	return harness.StartProcess(t, "pgbench", args...)
}

// measureRecovery polls SELECT 1 through the sidecar until it succeeds
// and returns how long that took.
func measureRecovery(t *testing.T, ctx context.Context, listen string) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < 30*time.Second {
		if last = selectOne(ctx, listen, "globex"); last == nil {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	t.Fatalf("the sidecar does not serve 30s after the upstream returned: %v", last)
	return 0
}

// TestPostgresKilled: PostgreSQL is SIGKILLed (with its backends, as a
// crash) while pgbench and transactional clients run through the sidecar,
// then restarted on the same port. Every client hears a clean SQLSTATE
// within a bound, nothing hangs, no statement runs twice, every
// acknowledged commit survives, and service returns within recoveryBound
// of the server's return, with no dead connection left in the pool.
func TestPostgresKilled(t *testing.T) {
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	listen, sc := startPGSidecar(t, pg.Port(), "", "")

	bench := startPgbench(t, listen, 4, 60*time.Second)
	load := newPGLoad(tenantURL(listen, "acme"), 50*time.Millisecond)
	load.start(8, 0)
	defer load.finish()
	load.waitCommits(t, 50, 30*time.Second)

	killed := time.Now()
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	// Every client notices: pgbench's clients abort on the lost
	// connection (it does not reconnect) and pgbench exits at once.
	select {
	case <-bench.Done():
		t.Logf("pgbench exited %v after the kill", time.Since(killed).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatalf("pgbench still running 20s after the upstream was killed:\n%s", bench.Output())
	}
	// The reason is the sidecar's, or PostgreSQL's own when a backend saw
	// its postmaster die before its socket closed (it sends that FATAL,
	// which the sidecar passes on).
	if out := bench.Output(); !strings.Contains(out, "server connection to the upstream database was lost") &&
		!strings.Contains(out, "could not connect to the upstream") && !strings.Contains(out, "circuit breaker") &&
		!strings.Contains(out, "terminating connection due to unexpected postmaster exit") {
		t.Errorf("pgbench's clients did not hear why:\n%s", out)
	}
	// While it is down, clients get errors fast: the dial fails, then the
	// breaker opens.
	harness.Eventually(t, 10*time.Second, func() error {
		err := selectOne(ctx, listen, "globex")
		if code := sqlstate(err); code != "57P03" {
			return fmt.Errorf("upstream down: %v (SQLSTATE %q), want the breaker's 57P03", err, code)
		}
		return nil
	})
	start := time.Now()
	if err := selectOne(ctx, listen, "globex"); sqlstate(err) != "57P03" || time.Since(start) > 5*time.Second {
		t.Errorf("with the breaker open: %v after %v", err, time.Since(start))
	}

	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rec := measureRecovery(t, ctx, listen)
	result(t, groupUpstream, "PostgreSQL SIGKILLed under pgbench, restarted on its port: service back after its return", "%v (bound %v)", rec.Round(time.Millisecond), recoveryBound)
	if rec > recoveryBound {
		t.Errorf("service returned %v after PostgreSQL did, want within %v", rec, recoveryBound)
	}
	load.waitCommits(t, 50, 30*time.Second)
	load.finish()
	t.Logf("load: %s", load.report())
	load.check(t, ctx, pg.AdminURL(appDB))
	harness.Eventually(t, 10*time.Second, func() error { return noDeadServers(ctx, listen, pg.AdminURL(appDB)) })
	if err := sc.Exited(); err != nil {
		t.Fatalf("sidecar %v", err)
	}
}

// TestPostgresFastRestart: `pg_ctl restart -m fast` (SIGINT to the
// postmaster: backends end with 57P01, then a new server starts) while
// transactional clients run.
func TestPostgresFastRestart(t *testing.T) {
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	listen, _ := startPGSidecar(t, pg.Port(), "", "")
	load := newPGLoad(tenantURL(listen, "acme"), 50*time.Millisecond)
	load.start(8, 0)
	defer load.finish()
	load.waitCommits(t, 50, 30*time.Second)

	if err := pg.Stop(); err != nil { // pg_ctl stop -m fast sends this SIGINT
		t.Fatal(err)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rec := measureRecovery(t, ctx, listen)
	result(t, groupUpstream, "PostgreSQL `pg_ctl restart -m fast`: service back after its return", "%v (bound %v)", rec.Round(time.Millisecond), recoveryBound)
	if rec > recoveryBound {
		t.Errorf("service returned %v after PostgreSQL did, want within %v", rec, recoveryBound)
	}
	load.waitCommits(t, 50, 30*time.Second)
	load.finish()
	t.Logf("load: %s", load.report())
	load.check(t, ctx, pg.AdminURL(appDB))
	harness.Eventually(t, 10*time.Second, func() error { return noDeadServers(ctx, listen, pg.AdminURL(appDB)) })
}

// TestPostgresUnreachable puts a fault-injecting relay between the sidecar
// and PostgreSQL: reset (connections cut, new ones refused), stall (the
// upstream answers nothing, mid-transaction and at connect) and blackhole.
// Clients hear a clean SQLSTATE within a bound; when the relay passes
// again, service returns within recoveryBound, no dead connection left.
func TestPostgresUnreachable(t *testing.T) {
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	relay := harness.NewRelay(t, fmt.Sprintf("127.0.0.1:%d", pg.Port()))
	listen, _ := startPGSidecar(t, relay.Port(), `  pool:
    connect_timeout: 2s
    response_timeout: 3s
`, "")
	for i, fault := range []harness.Fault{harness.Reset, harness.Stall, harness.Blackhole, harness.HalfClose} {
		t.Run(fault.String(), func(t *testing.T) {
			relay.SetFault(harness.Pass)
			load := newPGLoad(tenantURL(listen, "acme"), 50*time.Millisecond)
			// A bound on every statement: connect_timeout or
			// query_timeout, plus the breaker; anything past 10s hangs.
			load.hangAfter = 10 * time.Second
			load.start(6, 100*(i+1)) // client ids of their own in the ledger
			defer load.finish()
			load.waitCommits(t, 30, 30*time.Second)

			relay.SetFault(fault)
			faulted := time.Now()
			// Every client hears of it within the bound.
			harness.Eventually(t, 15*time.Second, func() error {
				load.mu.Lock()
				defer load.mu.Unlock()
				if len(load.firstErr) < 6 {
					return fmt.Errorf("%d of 6 clients have seen an error", len(load.firstErr))
				}
				return nil
			})
			result(t, groupUpstream, fmt.Sprintf("PostgreSQL behind the relay, %s: every client had a clean error within", fault), "%v (response_timeout 3s, connect_timeout 2s)", time.Since(faulted).Round(time.Millisecond))
			// New clients too, fast once the breaker is open.
			harness.Eventually(t, 15*time.Second, func() error {
				err := selectOne(ctx, listen, "globex")
				if code := sqlstate(err); code != "57P03" {
					return fmt.Errorf("new client: %v (SQLSTATE %q), want the breaker's 57P03", err, code)
				}
				return nil
			})

			relay.SetFault(harness.Pass)
			rec := measureRecovery(t, ctx, listen)
			result(t, groupUpstream, fmt.Sprintf("PostgreSQL behind the relay, %s, then passing again: service back after", fault), "%v (bound %v)", rec.Round(time.Millisecond), recoveryBound)
			if rec > recoveryBound {
				t.Errorf("service returned %v after the upstream did, want within %v", rec, recoveryBound)
			}
			load.waitCommits(t, 30, 30*time.Second)
			load.finish()
			t.Logf("load: %s", load.report())
			load.check(t, ctx, pg.AdminURL(appDB))
			harness.Eventually(t, 10*time.Second, func() error { return noDeadServers(ctx, listen, pg.AdminURL(appDB)) })
		})
	}
}
