package faults

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestDrainPostgres: SIGTERM while pgbench (-c 16, read/write) and
// transactional clients that pause inside their transactions run through
// the sidecar. Every transaction begun before the signal commits; new
// connections are refused; the sidecar exits 0 within drain_timeout;
// pgbench's clients end only at a transaction boundary (aborted at BEGIN,
// never mid-transaction) and it reports no failed transaction.
func TestDrainPostgres(t *testing.T) {
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const drainTimeout = 20 * time.Second
	listen, sc := startPGSidecar(t, pg.Port(), "", fmt.Sprintf("drain_timeout: %s\n", drainTimeout))

	bench := startPgbench(t, listen, 16, 120*time.Second, "-P", "1")
	load := newPGLoad(tenantURL(listen, "acme"), 300*time.Millisecond)
	load.start(8, 0)
	defer load.finish()
	load.waitCommits(t, 30, 60*time.Second)
	harness.Eventually(t, 60*time.Second, func() error {
		if !regexp.MustCompile(`progress: .* [1-9][0-9.]* tps`).MatchString(bench.Output()) {
			return errors.New("pgbench has not committed anything yet")
		}
		return nil
	})

	signalled := time.Now()
	if err := sc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused at once.
	harness.Eventually(t, 5*time.Second, func() error {
		if err := selectOne(ctx, listen, "globex"); err == nil {
			return errors.New("a new client was still served after SIGTERM")
		}
		return nil
	})
	code := sc.Wait(t, drainTimeout+10*time.Second)
	took := time.Since(signalled)
	result(t, groupDrain, "SIGTERM under pgbench -c 16 and transactional clients: exit", "code %d after %v (drain_timeout %v)", code, took.Round(time.Millisecond), drainTimeout)
	if code != 0 {
		t.Errorf("exit code %d after the drain", code)
	}
	if took > drainTimeout {
		t.Errorf("drain took %v, past drain_timeout %v", took, drainTimeout)
	}
	load.finish()
	begun, failed := load.failedBegunBefore(signalled)
	t.Logf("load: %s", load.report())
	result(t, groupDrain, "transactional clients: transactions begun before SIGTERM that failed", "%d of %d", len(failed), begun)
	if len(failed) > 0 {
		t.Errorf("%d transactions begun before SIGTERM did not commit: %v", len(failed), failed)
	}
	load.check(t, ctx, pg.AdminURL(appDB))

	select {
	case <-bench.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("pgbench still runs after the sidecar exited")
	}
	out := bench.Output()
	aborted := regexp.MustCompile(`client \d+ script \d+ aborted in command (\d+)`).FindAllStringSubmatch(out, -1)
	for _, m := range aborted {
		if m[1] != "1" { // command 0 is \set, 1 is BEGIN
			t.Errorf("a pgbench client was ended mid-transaction (command %s):\n%s", m[1], clip(out, 2000))
			break
		}
	}
	if !strings.Contains(out, "number of failed transactions: 0 ") {
		t.Errorf("pgbench reports failed transactions:\n%s", clip(out, 2000))
	}
	result(t, groupDrain, "pgbench -c 16: failed transactions; clients ended at a BEGIN (not yet begun)", "%s; %d",
		strings.TrimPrefix(regexp.MustCompile(`number of failed transactions: [^\n]*`).FindString(out), "number of failed transactions: "), len(aborted))
}

// TestDrainDeadlines: with a transaction left open, the drain ends at
// drain_timeout, rolling it back with 57P01; and a second SIGTERM ends a
// drain at once.
func TestDrainDeadlines(t *testing.T) {
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	openTx := func(listen string) (*pgx.Conn, pgx.Tx) {
		c, err := pgx.Connect(ctx, tenantURL(listen, "acme"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO ledger (client, seq, note) VALUES (-1, -1, 'never committed')"); err != nil {
			t.Fatal(err)
		}
		return c, tx
	}

	t.Run("timeout", func(t *testing.T) {
		listen, sc := startPGSidecar(t, pg.Port(), "", "drain_timeout: 2s\n")
		_, tx := openTx(listen)
		signalled := time.Now()
		if err := sc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := sc.Wait(t, 15*time.Second); code != 0 {
			t.Errorf("exit code %d at the drain timeout", code)
		}
		result(t, groupDrain, "a transaction left open: exit after SIGTERM (drain_timeout 2s)", "%v", time.Since(signalled).Round(time.Millisecond))
		err := tx.Commit(ctx)
		if code := sqlstate(err); code != "57P01" && err == nil {
			t.Errorf("commit after the drain timeout: %v, want an error", err)
		}
	})
	t.Run("second SIGTERM", func(t *testing.T) {
		listen, sc := startPGSidecar(t, pg.Port(), "", "drain_timeout: 60s\n")
		openTx(listen)
		if err := sc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 5*time.Second, func() error {
			if err := selectOne(ctx, listen, "globex"); err == nil {
				return errors.New("not draining yet")
			}
			return nil
		})
		if err := sc.Exited(); err != nil {
			t.Fatalf("the first SIGTERM did not drain: %v", err)
		}
		second := time.Now()
		if err := sc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		sc.Wait(t, 10*time.Second)
		result(t, groupDrain, "a second SIGTERM: exit after it (drain_timeout 60s)", "%v", time.Since(second).Round(time.Millisecond))
	})
	c, err := pgx.Connect(ctx, pg.AdminURL(appDB))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM ledger WHERE client = -1").Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows of transactions ended by the drain: %d %v", n, err)
	}
}

// TestDrainRedis: SIGTERM while go-redis clients run MULTI blocks that
// pause between their commands (and plain pipelines run beside them):
// every block begun before the signal reaches EXEC and runs; new
// connections are refused; the sidecar exits 0 within drain_timeout.
func TestDrainRedis(t *testing.T) {
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	rd := harness.Redis(t)
	listen, redisListen, admin := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	const drainTimeout = 20 * time.Second
	sc := harness.StartSidecar(t, tgBinary, admin, redisSidecarConfig(listen, redisListen, admin, pg.Port(), rd.Addr(), "",
		fmt.Sprintf("drain_timeout: %s\n", drainTimeout)), harness.SidecarOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	plain := startRedisLoad(redisListen, 4)
	defer plain.finish()

	type block struct {
		begun time.Time
		err   error
	}
	var (
		mu     sync.Mutex
		blocks []block
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := redisClient(redisListen, "acme", 1)
			defer c.Close()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("multi:%d", i)
				begun, err := multiBlock(ctx, c, key, n)
				if begun.IsZero() {
					if err != nil {
						return // not begun: the sidecar is going
					}
					continue
				}
				mu.Lock()
				blocks = append(blocks, block{begun, err})
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	harness.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(blocks) < 20 {
			return fmt.Errorf("%d MULTI blocks done", len(blocks))
		}
		return nil
	})
	signalled := time.Now()
	if err := sc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() error {
		c := redisClient(redisListen, "globex", 1)
		defer c.Close()
		if err := c.Ping(ctx).Err(); err == nil {
			return errors.New("a new client was still served after SIGTERM")
		}
		return nil
	})
	code := sc.Wait(t, drainTimeout+10*time.Second)
	took := time.Since(signalled)
	result(t, groupDrain, "SIGTERM under MULTI blocks and pipelined Redis clients: exit", "code %d after %v (drain_timeout %v)", code, took.Round(time.Millisecond), drainTimeout)
	if code != 0 {
		t.Errorf("exit code %d after the drain", code)
	}
	if took > drainTimeout {
		t.Errorf("drain took %v, past drain_timeout %v", took, drainTimeout)
	}
	close(stop)
	wg.Wait()
	plain.finish()
	mu.Lock()
	defer mu.Unlock()
	failed, before := 0, 0
	for _, b := range blocks {
		if b.begun.Before(signalled) {
			before++
			if b.err != nil {
				failed++
				t.Errorf("a MULTI block begun before SIGTERM failed: %v", b.err)
			}
		}
	}
	result(t, groupDrain, "MULTI blocks begun before SIGTERM that failed", "%d of %d", failed, before)
	if len(plain.misrouted) > 0 {
		t.Errorf("wrong replies during the drain: %v", plain.misrouted[:min(5, len(plain.misrouted))])
	}
}

// multiBlock runs MULTI, SET, a pause, INCR, EXEC on one connection and
// checks EXEC's replies; begun is when MULTI was acknowledged (zero if
// it was not).
func multiBlock(ctx context.Context, c *goredis.Client, key string, n int) (begun time.Time, err error) {
	conn := c.Conn()
	defer conn.Close()
	if err := conn.Do(ctx, "MULTI").Err(); err != nil {
		return time.Time{}, err
	}
	begun = time.Now()
	val := fmt.Sprintf("%s=%d", key, n)
	if err := conn.Do(ctx, "SET", key, val).Err(); err != nil {
		return begun, fmt.Errorf("SET in MULTI: %w", err)
	}
	time.Sleep(100 * time.Millisecond) // the client's own pace, mid-block: not synchronisation
	if err := conn.Do(ctx, "INCR", key+":n").Err(); err != nil {
		return begun, fmt.Errorf("INCR in MULTI: %w", err)
	}
	res, err := conn.Do(ctx, "EXEC").Slice()
	if err != nil {
		return begun, fmt.Errorf("EXEC: %w", err)
	}
	if len(res) != 2 || res[0] != "OK" {
		return begun, fmt.Errorf("EXEC answered %v", res)
	}
	if _, ok := res[1].(int64); !ok {
		return begun, fmt.Errorf("EXEC's INCR answered %v", res[1])
	}
	return begun, nil
}
