package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// scenario is one way of running a binary; run returns one measurement per
// entry of readings.
type scenario struct {
	name     string
	readings []string
	run      func(ctx context.Context, b binary, u *upstreams, o options) ([]measurement, error)
}

var scenarios = []scenario{
	{
		name:     "version",
		readings: []string{"version (exits)"},
		run: func(ctx context.Context, b binary, _ *upstreams, o options) ([]measurement, error) {
			m, err := peakOf(ctx, b.path, o, "version")
			return []measurement{m}, err
		},
	},
	{
		name:     "sidecar, postgres listener, policy from the file",
		readings: []string{"sidecar: postgres, file policy, idle"},
		run: func(ctx context.Context, b binary, u *upstreams, o options) ([]measurement, error) {
			return runSidecar(ctx, b, u, o, false)
		},
	},
	{
		name:     "sidecar, postgres and redis listeners, xDS",
		readings: []string{"sidecar: postgres + redis + xDS, idle", "… after one session on each"},
		run: func(ctx context.Context, b binary, u *upstreams, o options) ([]measurement, error) {
			return runSidecar(ctx, b, u, o, true)
		},
	},
}

// runSidecar starts `b sidecar`, waits until it is ready (with xds, that
// is once the control plane's policy is applied), lets it idle for
// o.settle and reads its memory; with full, it has a Redis listener too
// and the policy comes over xDS, and after the first reading a client runs
// one session on each listener, and the memory is read again after
// another o.settle.
func runSidecar(ctx context.Context, b binary, u *upstreams, o options, full bool) (ms []measurement, err error) {
	ports, err := benchkit.FreePorts(3)
	if err != nil {
		return nil, err
	}
	pgListen, admin := benchkit.LocalAddr(ports[0]), benchkit.LocalAddr(ports[1])
	redisListen := ""
	if full {
		redisListen = benchkit.LocalAddr(ports[2])
	}
	svc, err := benchkit.NewService("sidecar "+b.name, "tg-bench-rss-sidecar-")
	if err != nil {
		return nil, err
	}
	svc.Addr, svc.Env = pgListen, o.extraEnv
	defer func() { err = errors.Join(err, svc.Stop()) }()
	if err := writeFile(svc.Dir, "sidecar.yaml", u.sidecarConfig(pgListen, redisListen, admin, full)); err != nil {
		return nil, err
	}
	if err := prepare(b.path, o); err != nil {
		return nil, err
	}
	if err := svc.Start(ctx, httpOK("http://"+admin+"/readyz"), b.path, "sidecar", "--config", "sidecar.yaml", "--log-level", "warn"); err != nil {
		return nil, err
	}
	read := func() error {
		if err := idle(ctx, o.settle); err != nil {
			return err
		}
		mem, err := readMemory(svc.Pid(), b.path)
		if err != nil {
			return err
		}
		heap, err := goHeapMiB(ctx, "http://"+admin+"/metrics")
		if err != nil {
			return err
		}
		ms = append(ms, measurement{mem: mem, heapMiB: heap})
		return svc.Alive()
	}
	if err := read(); err != nil {
		return nil, err
	}
	if !full {
		return ms, nil
	}
	if err := sessions(ctx, pgListen, redisListen); err != nil {
		return nil, fmt.Errorf("client sessions: %w\n%s", err, svc.LogTail())
	}
	if err := read(); err != nil {
		return nil, err
	}
	return ms, nil
}

// sessions runs one client session on each listener as tenant acme: a
// query through the statement firewall, and a write and a read of a key.
func sessions(ctx context.Context, pgListen, redisListen string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://acme:%s@%s/rss?sslmode=disable", secret, pgListen))
	if err != nil {
		return err
	}
	var n int
	err = c.QueryRow(ctx, "SELECT count(*)::int FROM pg_class WHERE relname = $1", "pg_class").Scan(&n)
	if cerr := c.Close(ctx); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: redisListen, Username: "acme", Password: secret, Protocol: 2, DisableIdentity: true})
	defer rdb.Close()
	if err := rdb.Set(ctx, "greeting", "hello", 0).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if v, err := rdb.Get(ctx, "greeting").Result(); err != nil || v != "hello" {
		return fmt.Errorf("redis: GET %q, %v", v, err)
	}
	return nil
}

// idle waits d: the measured process's idle time, not a synchronisation.
func idle(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// goHeapMiB reads go_memstats_heap_inuse_bytes from a Prometheus endpoint.
func goHeapMiB(ctx context.Context, url string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f / (1 << 20), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no go_memstats_heap_inuse_bytes", url)
}
