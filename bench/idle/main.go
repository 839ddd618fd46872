// Command idle measures the sidecar's memory with many idle clients: it
// starts a throwaway PostgreSQL and `tenantguard sidecar`, opens 1 and then
// N authenticated client connections that stay idle, and prints the
// sidecar's RSS at each step and the cost per idle client.
//
//	go build -o bin/tenantguard ./cmd/tenantguard && go run ./bench/idle -n 10000
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

func main() {
	n := flag.Int("n", 10000, "idle client connections to open")
	bin := flag.String("tenantguard", "bin/tenantguard", "tenantguard binary")
	out := flag.String("out", "", "also write the results as markdown to this file")
	heap := flag.String("heap", "", "write the settled sidecar's heap profile (pprof) to this file")
	flag.Parse()
	if err := run(*n, *bin, *out, *heap); err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
}

func run(n int, bin, out, heapOut string) error {
	raiseFDLimit()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pg, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		return err
	}
	defer pg.Close()
	if err := pg.Exec(ctx, "postgres", "CREATE ROLE idle_app LOGIN PASSWORD 'idle_pw'"); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tg-idle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return err
	}
	listen, admin := benchkit.LocalAddr(ports[0]), benchkit.LocalAddr(ports[1])
	cfg := fmt.Sprintf(`listen: {postgres: %q, admin: %q}
postgres:
  databases: [{name: postgres, url: "postgres://idle_app:idle_pw@127.0.0.1:%d/postgres?sslmode=disable"}]
  pool: {size: 4}
tenants: [{id: acme, passwords: ["acme-secret-1"]}]
debug: {pprof: true}
`, listen, admin, pg.Port())
	path := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, "sidecar", "--config", path, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGINT); _ = cmd.Wait() }()
	if err := waitReady(ctx, "http://"+admin+"/readyz"); err != nil {
		return err
	}
	url := "postgres://acme:acme-secret-1@" + listen + "/postgres?sslmode=disable"
	var conns []*pgconn.PgConn
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	open := func(k int) error {
		var mu sync.Mutex
		var failed atomic.Value
		var wg sync.WaitGroup
		next := make(chan struct{}, k)
		for i := 0; i < k; i++ {
			next <- struct{}{}
		}
		close(next)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range next {
					c, err := pgconn.Connect(ctx, url)
					if err != nil {
						failed.Store(err)
						return
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			return err
		}
		return nil
	}
	base, err := rss(cmd.Process.Pid)
	if err != nil {
		return err
	}
	if err := open(1); err != nil {
		return err
	}
	one, _ := rss(cmd.Process.Pid)
	goOne, err := goMemory(ctx, "http://"+admin+"/metrics")
	if err != nil {
		return err
	}
	start := time.Now()
	if err := open(n - 1); err != nil {
		return fmt.Errorf("after %d connections: %w", len(conns), err)
	}
	took := time.Since(start)
	many, _ := rss(cmd.Process.Pid)
	goMany, err := goMemory(ctx, "http://"+admin+"/metrics")
	if err != nil {
		return err
	}
	per := func(a, b float64) float64 { return (b - a) / float64(len(conns)-1) / 1024 }
	table := benchkit.Table{Left: 1, Header: []string{"when", "RSS MiB", "KiB/client", "heap KiB/client", "stack KiB/client", "goroutines/client"}}
	report := func(when string, rssNow int64, g map[string]float64) {
		table.Rows = append(table.Rows, []string{when,
			fmt.Sprintf("%.1f", mib(rssNow)),
			fmt.Sprintf("%.1f", float64(rssNow-one)/float64(len(conns)-1)/1024),
			fmt.Sprintf("%.1f", per(goOne["go_memstats_heap_inuse_bytes"], g["go_memstats_heap_inuse_bytes"])),
			fmt.Sprintf("%.1f", per(goOne["go_memstats_stack_inuse_bytes"], g["go_memstats_stack_inuse_bytes"])),
			fmt.Sprintf("%.2f", (g["go_goroutines"]-goOne["go_goroutines"])/float64(len(conns)-1))})
	}
	setup := fmt.Sprintf("Idle PostgreSQL clients: sidecar RSS %.1f MiB before clients, %.1f MiB with 1 idle client; %d idle clients opened in %s. "+
		"Per client: the RSS growth over the 1-client figure, and Go's own accounting (heap in use, goroutine stacks, goroutines) from the sidecar's metrics.",
		mib(base), mib(one), len(conns), took.Round(time.Millisecond))
	report("just opened", many, goMany)
	// Settled: what a sidecar idle for a while holds: idle clients parked
	// (after postgres.park_idle_clients_after, 5 s by default), the
	// garbage of the logins collected, stacks shrunk.
	time.Sleep(8 * time.Second) // the idleness being measured
	for i := 0; i < 4; i++ {
		if err := forceGC(ctx, "http://"+admin+"/debug/pprof/heap?gc=1"); err != nil {
			return err
		}
	}
	settled, _ := rss(cmd.Process.Pid)
	goSettled, err := goMemory(ctx, "http://"+admin+"/metrics")
	if err != nil {
		return err
	}
	report("settled (idle 8 s, 4 GCs)", settled, goSettled)
	if heapOut != "" {
		if err := fetch(ctx, "http://"+admin+"/debug/pprof/heap", heapOut); err != nil {
			return err
		}
	}
	rep := benchkit.Report{Setup: setup, Tables: []benchkit.Table{table}}
	return rep.Write(out)
}

// fetch writes what url returns into the file path.
func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

// forceGC asks the sidecar's pprof endpoint for a heap profile after a GC.
func forceGC(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// goMemory reads the Go runtime's memory and goroutine gauges from the
// sidecar's metrics, after a GC (the metrics handler does not force one,
// so the figures include garbage not yet collected; heap in use is an
// upper bound).
func goMemory(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines":
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, sc.Err()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// rss reads VmRSS of a process, in bytes.
func rss(pid int) (int64, error) {
	kib, err := benchkit.RSSKiB(pid)
	return kib * 1024, err
}

func waitReady(ctx context.Context, url string) error {
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sidecar not ready: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// raiseFDLimit lifts the soft open-files limit to the hard one; the
// sidecar inherits it.
func raiseFDLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
