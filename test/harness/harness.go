// Package harness gives a test package shared throwaway servers, started
// lazily on first use and removed when the package's tests finish:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
//	func TestX(t *testing.T) {
//		pg := harness.Postgres(t)
//		rd := harness.Redis(t)
//		...
//	}
//
// Servers are shared by every test in the package; a test that stops one
// must start it again before it returns.
package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
)

// startTimeout bounds how long a shared server may take to come up.
const startTimeout = 2 * time.Minute

var (
	mu      sync.Mutex
	closers []func() error

	pgOnce sync.Once
	pg     *pgcluster.Cluster
	pgErr  error

	rdOnce sync.Once
	rd     *redisserver.Server
	rdErr  error

	rcOnce sync.Once
	rc     *redisserver.Cluster
	rcErr  error
)

// Main runs the package's tests, then stops and removes every server that
// was started, and exits with the tests' exit code (1 if cleanup failed).
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain with cleanup of its own to
// do before exiting: it returns the exit code.
func Run(m *testing.M) int {
	code := m.Run()
	if err := closeAll(); err != nil {
		fmt.Fprintln(os.Stderr, "harness: cleanup:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// closeAll closes the started servers, newest first.
func closeAll() error {
	mu.Lock()
	defer mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i]())
	}
	closers = nil
	return errors.Join(errs...)
}

func register(close func() error) {
	mu.Lock()
	defer mu.Unlock()
	closers = append(closers, close)
}

// logger logs server lifecycle to stderr under go test -v, else nowhere.
func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// Postgres returns the package's shared PostgreSQL cluster, starting it on
// first use; it fails the test if the cluster cannot start.
func Postgres(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	pgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if pg, pgErr = pgcluster.Start(ctx, pgcluster.Options{Logger: logger()}); pgErr == nil {
			register(pg.Close)
		}
	})
	if pgErr != nil {
		t.Fatalf("harness: start postgres: %v", pgErr)
	}
	return pg
}

// Redis returns the package's shared redis-server, starting it on first use;
// it fails the test if the server cannot start.
func Redis(t testing.TB) *redisserver.Server {
	t.Helper()
	rdOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if rd, rdErr = redisserver.Start(ctx, redisserver.Options{Logger: logger()}); rdErr == nil {
			register(rd.Close)
		}
	})
	if rdErr != nil {
		t.Fatalf("harness: start redis: %v", rdErr)
	}
	return rd
}

// RedisCluster returns the package's shared Redis Cluster (3 masters, 3
// replicas), starting it on first use; it skips the test where no cluster
// can run (redisserver.ErrNoCluster) and fails it if the cluster cannot
// start. Tests that kill or fail over nodes start their own.
func RedisCluster(t testing.TB) *redisserver.Cluster {
	t.Helper()
	rcOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if rc, rcErr = redisserver.StartCluster(ctx, redisserver.ClusterOptions{Logger: logger()}); rcErr == nil {
			register(rc.Close)
		}
	})
	if errors.Is(rcErr, redisserver.ErrNoCluster) {
		t.Skipf("harness: %v", rcErr)
	}
	if rcErr != nil {
		t.Fatalf("harness: start redis cluster: %v", rcErr)
	}
	return rc
}

// Eventually calls f every 10ms until it returns nil, failing the test with
// f's last error if that has not happened within timeout.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("harness: not done after %s: %v", timeout, err)
		}
		<-tick.C
	}
}

// FreshRedis starts a redis-server of the test's own, for tests that need
// an empty server, and returns a RESP2 client to it; both are closed when
// the test ends.
func FreshRedis(t testing.TB) *goredis.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	srv, err := redisserver.Start(ctx, redisserver.Options{Logger: logger()})
	if err != nil {
		t.Fatalf("harness: start redis: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("harness: stop redis: %v", err)
		}
	})
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Protocol: 2, DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var (
	namedMu sync.Mutex
	named   = map[string]*pgcluster.Cluster{}
)

// PostgresNamed returns another shared PostgreSQL cluster of the package,
// one per name, started on first use and removed with the others: for
// tests that need several clusters (tenant placement). Postgres(t) is not
// among them.
func PostgresNamed(t testing.TB, name string) *pgcluster.Cluster {
	t.Helper()
	namedMu.Lock()
	defer namedMu.Unlock()
	if c := named[name]; c != nil {
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Logger: logger()})
	if err != nil {
		t.Fatalf("harness: start postgres %q: %v", name, err)
	}
	register(c.Close)
	named[name] = c
	return c
}
