// Command hostile measures what hostile clients of one tenant cost another
// tenant (issue 17): the quiet tenant's p50/p99 latency through the
// sidecar alone, then under each attack, and the ratio to alone.
//
//	go build -o bin/tenantguard ./cmd/tenantguard && go run ./bench/hostile -duration 10s
//
// It starts a throwaway PostgreSQL and redis-server and `tenantguard
// sidecar` with the short timeouts of test/faults' hostile tests. The
// quiet tenant (globex) runs 4 Postgres clients (SELECT 1 on their own
// connections) and 4 Redis clients (GET), each one request every 5 ms;
// the attacker (acme) runs, one scenario at a time, in a process of its own
// (this program again, at nice 19 unless -attacker-nice says otherwise, and
// held by a cgroup CPU quota to 25% of one core unless -attacker-cpu says
// otherwise: a client on another machine would take none of these cores):
//
//   - slowloris: 1,000 connections (half each protocol) that send part of
//     a startup packet or AUTH frame and nothing more, reopened as the
//     sidecar closes them at the startup/auth timeout;
//   - garbage: 50 workers opening connections that send 4 KiB of random
//     bytes, in a loop;
//   - oversized: 20 workers sending length headers past every limit
//     (2^31-byte startup packet, *2^31 multibulk, $2^40 bulk), in a loop;
//   - never-reads-pg: 8 clients each running a 1 GB SELECT and never
//     reading, reconnecting when cut off (client_write_timeout);
//   - pipeline-redis: 4 clients each pipelining a million GETs of a 100 KB
//     value without reading, reconnecting when cut off (output limit);
//   - busy-cpu: not an attack but the reference: no connection at all,
//     two threads spinning at the attacker's niceness, to show what
//     merely sharing the two cores with such a process costs the quiet
//     tenant.
//
// Latency includes everything the quiet tenant's client sees. This machine
// is shared: the attacks take CPU, so the ratio measures the sidecar and
// the machine together; run it on an otherwise idle machine.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
)

type options struct {
	benchkit.Options
	duration time.Duration
	nice     int
	cpu      int // percent of one core the attacker may use; 0: no cap
}

// attackEnv names the scenario a child process runs as the attacker.
const attackEnv = "TG_HOSTILE_ATTACK"

func main() {
	if name := os.Getenv(attackEnv); name != "" {
		os.Exit(attackMain(name))
	}
	benchkit.Main("hostile", func(args []string) (options, error) {
		var o options
		fs := flag.NewFlagSet("hostile", flag.ContinueOnError)
		o.Register(fs, "p99")
		fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long the quiet tenant is measured per scenario")
		fs.IntVar(&o.nice, "attacker-nice", 19, "niceness of the attacker's process (0: the same priority as the sidecar)")
		fs.IntVar(&o.cpu, "attacker-cpu", 25, "percent of one core the attacker's process may use (a cgroup CPU quota), standing in for a client on another machine; 0: no cap")
		return o, o.Parse(fs, args)
	}, run)
}

type env struct {
	pgURL     func(tenant string) string
	redisAddr string
}

func run(ctx context.Context, o options) error {
	if err := benchkit.EnsureBinary(ctx, o.Tenantguard); err != nil {
		return err
	}
	bin, err := filepath.Abs(o.Tenantguard) // the service runs in its own directory
	if err != nil {
		return err
	}
	pg, err := pgcluster.Start(ctx, pgcluster.Options{ExtraConf: map[string]string{"max_connections": "100"}})
	if err != nil {
		return err
	}
	defer pg.Close()
	if err := pg.Exec(ctx, "postgres", "CREATE ROLE hostile_app LOGIN PASSWORD 'hostile_pw'"); err != nil {
		return err
	}
	rd, err := redisserver.Start(ctx, redisserver.Options{})
	if err != nil {
		return err
	}
	defer rd.Close()
	ports, err := benchkit.FreePorts(3)
	if err != nil {
		return err
	}
	listen, redisListen, admin := benchkit.LocalAddr(ports[0]), benchkit.LocalAddr(ports[1]), benchkit.LocalAddr(ports[2])
	svc, err := benchkit.NewService("tenantguard", "tg-hostile-")
	if err != nil {
		return err
	}
	defer svc.Stop()
	cfg := fmt.Sprintf(`listen: {postgres: %q, redis: %q, admin: %q}
postgres:
  databases: [{name: postgres, url: "postgres://hostile_app:hostile_pw@127.0.0.1:%d/postgres?sslmode=disable"}]
  startup_timeout: 2s
  client_write_timeout: 2s
redis:
  upstream: %q
  auth_timeout: 2s
  client_write_timeout: 2s
tenants:
  - {id: acme, passwords: ["acme-secret-1"]}
  - {id: globex, passwords: ["globex-secret-1"]}
`, listen, redisListen, admin, pg.Port(), rd.Addr())
	path := filepath.Join(svc.Dir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	svc.Addr = listen
	ready := func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, "postgres://globex:globex-secret-1@"+listen+"/postgres?sslmode=disable")
		if err != nil {
			return err
		}
		return c.Close(ctx)
	}
	if err := svc.Start(ctx, ready, bin, "sidecar", "--config", path, "--log-level", "error"); err != nil {
		return err
	}
	e := env{
		pgURL: func(tenant string) string {
			return fmt.Sprintf("postgres://%s:%s-secret-1@%s/postgres?sslmode=disable", tenant, tenant, listen)
		},
		redisAddr: redisListen,
	}
	big := goredis.NewClient(&goredis.Options{Addr: redisListen, Username: "acme", Password: "acme-secret-1"})
	err = big.Set(ctx, "big", strings.Repeat("v", 100_000), 0).Err()
	big.Close()
	if err != nil {
		return err
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	var limit *cpuCap
	capped := "uncapped"
	if o.cpu > 0 {
		if limit, err = newCPUCap(o.cpu); err != nil {
			benchkit.Logf("attacker CPU cap: %v; the attacker runs uncapped", err)
		} else {
			defer limit.remove()
			capped = fmt.Sprintf("held by a cgroup CPU quota to %d%% of one core", o.cpu)
		}
	}
	scenarios := append([]string{"alone"}, slices.Sorted(maps.Keys(attacks))...)
	type result struct{ pg, rd []time.Duration }
	results := map[string][]result{}
	for round := range o.Rounds {
		for _, name := range scenarios {
			benchkit.Logf("round %d: %s", round+1, name)
			var attacker *exec.Cmd
			if name != "alone" {
				if attacker, err = startAttacker(ctx, self, name, o.nice, listen, redisListen); err != nil {
					return err
				}
				if limit != nil {
					if err := limit.add(attacker.Process.Pid); err != nil {
						_ = attacker.Process.Kill()
						_ = attacker.Wait()
						return fmt.Errorf("attacker CPU cap: %w", err)
					}
				}
				select { // let the attack build up
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
				}
			}
			pgLat, rdLat, err := quiet(ctx, e, o.duration)
			if attacker != nil {
				_ = attacker.Process.Signal(syscall.SIGTERM)
				if werr := attacker.Wait(); werr != nil && err == nil && ctx.Err() == nil {
					err = fmt.Errorf("the attacker: %w", werr)
				}
			}
			if err != nil {
				return fmt.Errorf("%s: the quiet tenant failed: %w", name, err)
			}
			if err := svc.Alive(); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			results[name] = append(results[name], result{pgLat, rdLat})
		}
	}
	pct := func(xs []time.Duration, p float64) float64 {
		slices.Sort(xs)
		if len(xs) == 0 {
			return 0
		}
		return float64(xs[min(len(xs)-1, int(p*float64(len(xs))))]) / float64(time.Millisecond)
	}
	median := func(name string, proto int, p float64) float64 {
		var v []float64
		for _, r := range results[name] {
			if proto == 0 {
				v = append(v, pct(r.pg, p))
			} else {
				v = append(v, pct(r.rd, p))
			}
		}
		return benchkit.Median(v)
	}
	tab := benchkit.Table{Left: 1, Header: []string{"scenario", "pg p50 ms", "pg p99 ms", "pg p99 ÷ alone", "redis p50 ms", "redis p99 ms", "redis p99 ÷ alone"}}
	for _, name := range scenarios {
		tab.Rows = append(tab.Rows, []string{name,
			benchkit.Num(median(name, 0, 0.5), "%.2f"), benchkit.Num(median(name, 0, 0.99), "%.2f"),
			benchkit.Ratio(median(name, 0, 0.99), median("alone", 0, 0.99)),
			benchkit.Num(median(name, 1, 0.5), "%.2f"), benchkit.Num(median(name, 1, 0.99), "%.2f"),
			benchkit.Ratio(median(name, 1, 0.99), median("alone", 1, 0.99))})
	}
	rep := benchkit.Report{
		Setup: fmt.Sprintf("bench/hostile: the quiet tenant's latency (4 Postgres + 4 Redis clients, one request every 5 ms each) for %s per scenario, %d round(s), median over rounds; goal: p99 within 2× of alone. "+
			"The attacker runs in its own process at nice %d, %s, standing in for a client on another machine (on one 2-core machine it otherwise takes the CPU the sidecar and the quiet tenant need); what handling the attack costs the sidecar, PostgreSQL and redis-server stays on this machine. The sidecar runs with its defaults (failed_handshakes_per_second 100). "+
			"busy-cpu is the reference, not an attack: two threads spinning in the attacker's process and no connection, what sharing the cores with such a process costs by itself.", o.duration, o.Rounds, o.nice, capped),
		Tables: []benchkit.Table{tab},
	}
	return rep.Write(o.Out)
}

// quiet runs the quiet tenant for d and returns its latencies.
func quiet(ctx context.Context, e env, d time.Duration) (pgLat, rdLat []time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	record := func(lat *[]time.Duration, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil && ctx.Err() == nil {
			errs = append(errs, err)
		} else if err == nil {
			*lat = append(*lat, took)
		}
	}
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, e.pgURL("globex"))
			if err != nil {
				record(nil, 0, err)
				return
			}
			defer c.Close(context.Background())
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for ctx.Err() == nil {
				start := time.Now()
				var one int
				err := c.QueryRow(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol).Scan(&one)
				record(&pgLat, time.Since(start), err)
				select {
				case <-tick.C:
				case <-ctx.Done():
				}
			}
		}()
		go func() {
			defer wg.Done()
			c := goredis.NewClient(&goredis.Options{Addr: e.redisAddr, Username: "globex", Password: "globex-secret-1", PoolSize: 1})
			defer c.Close()
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for ctx.Err() == nil {
				start := time.Now()
				err := c.Get(ctx, "quiet").Err()
				if errors.Is(err, goredis.Nil) {
					err = nil
				}
				record(&rdLat, time.Since(start), err)
				select {
				case <-tick.C:
				case <-ctx.Done():
				}
			}
		}()
	}
	wg.Wait()
	return pgLat, rdLat, errors.Join(errs...)
}

// attacks are the scenarios, run by the attacker's process.
var attacks = map[string]func(ctx context.Context, e env){
	"slowloris":      slowloris,
	"garbage":        garbage,
	"oversized":      oversized,
	"never-reads-pg": neverReadsPG,
	"pipeline-redis": pipelineRedis,
	"busy-cpu":       busyCPU,
}

// busyCPU spins two threads until ctx ends (the reference scenario).
func busyCPU(ctx context.Context, _ env) {
	workers(ctx, 2, func(ctx context.Context, _ int) {
		for end := time.Now().Add(10 * time.Millisecond); time.Now().Before(end); {
		}
	})
}

// startAttacker runs scenario name in a child process (this program, at
// niceness nice) against the sidecar's listeners, until SIGTERM.
func startAttacker(ctx context.Context, self, name string, nice int, listen, redisListen string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, "nice", "-n", strconv.Itoa(nice), self)
	cmd.Env = append(os.Environ(), attackEnv+"="+name, "TG_HOSTILE_PG="+listen, "TG_HOSTILE_REDIS="+redisListen)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the attacker: %w", err)
	}
	return cmd, nil
}

// attackMain is the attacker's process: it runs one scenario until SIGTERM.
func attackMain(name string) int {
	attack := attacks[name]
	if attack == nil {
		fmt.Fprintf(os.Stderr, "hostile: unknown attack %q\n", name)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	listen := os.Getenv("TG_HOSTILE_PG")
	e := env{
		pgURL: func(tenant string) string {
			return fmt.Sprintf("postgres://%s:%s-secret-1@%s/postgres?sslmode=disable", tenant, tenant, listen)
		},
		redisAddr: os.Getenv("TG_HOSTILE_REDIS"),
	}
	attack(ctx, e)
	return 0
}

// workers runs f in n goroutines until ctx ends.
func workers(ctx context.Context, n int, f func(ctx context.Context, i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				f(ctx, i)
			}
		}()
	}
	wg.Wait()
}

// hold keeps c open until the sidecar closes it or ctx ends.
func hold(ctx context.Context, c net.Conn) {
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	_, _ = io.Copy(io.Discard, c)
	_ = c.Close()
}

func slowloris(ctx context.Context, e env) {
	workers(ctx, 1000, func(ctx context.Context, i int) {
		addr, partial := pgAddr(e), []byte{0, 0, 0, 40, 0, 3}
		if i%2 == 1 {
			addr, partial = e.redisAddr, []byte("*3\r\n$4\r\nAUTH\r\n$4\r\nac")
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			pause(ctx)
			return
		}
		_, _ = c.Write(partial)
		hold(ctx, c)
	})
}

func garbage(ctx context.Context, e env) {
	workers(ctx, 50, func(ctx context.Context, i int) {
		addr := pgAddr(e)
		if i%2 == 1 {
			addr = e.redisAddr
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			pause(ctx)
			return
		}
		junk := make([]byte, 4096)
		_, _ = rand.Read(junk)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(junk)
		hold(ctx, c)
	})
}

func oversized(ctx context.Context, e env) {
	frames := []struct {
		redis bool
		b     []byte
	}{
		{false, []byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0}},
		{true, []byte("*2147483648\r\n")},
		{true, []byte("*1\r\n$1099511627776\r\n")},
	}
	workers(ctx, 20, func(ctx context.Context, i int) {
		f := frames[i%len(frames)]
		addr := pgAddr(e)
		if f.redis {
			addr = e.redisAddr
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			pause(ctx)
			return
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(f.b)
		hold(ctx, c)
	})
}

func neverReadsPG(ctx context.Context, e env) {
	workers(ctx, 8, func(ctx context.Context, i int) {
		pc, err := pgconn.Connect(ctx, e.pgURL("acme"))
		if err != nil {
			pause(ctx)
			return
		}
		hj, err := pc.Hijack()
		if err != nil {
			return
		}
		q := "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)\x00"
		msg := binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(q)))
		_, _ = hj.Conn.Write(append(msg, q...))
		// Never read; the sidecar cuts it off at client_write_timeout
		// (2s); come back after it did.
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
		_ = hj.Conn.Close()
	})
}

func pipelineRedis(ctx context.Context, e env) {
	cmd := []byte("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
	batch := []byte(strings.Repeat(string(cmd), 1000))
	auth := []byte("AUTH acme acme-secret-1\r\n")
	workers(ctx, 4, func(ctx context.Context, i int) {
		c, err := net.DialTimeout("tcp", e.redisAddr, 5*time.Second)
		if err != nil {
			pause(ctx)
			return
		}
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		defer stop()
		defer c.Close()
		if _, err := c.Write(auth); err != nil {
			return
		}
		var ok [5]byte
		if _, err := io.ReadFull(c, ok[:]); err != nil {
			return
		}
		for range 1000 { // a million GETs, never read
			if _, err := c.Write(batch); err != nil {
				return
			}
		}
	})
}

func pgAddr(e env) string {
	u := e.pgURL("acme")
	u = u[strings.Index(u, "@")+1:]
	return u[:strings.Index(u, "/")]
}

func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(50 * time.Millisecond):
	}
}
