package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// target is one place pgbench connects to.
type target struct {
	name           string
	port           int
	user, password string
	svc            *benchkit.Service // the proxy process; nil for direct PostgreSQL
	skipModes      map[string]string // protocol mode → why this target cannot run it
	skipAll        string            // why the target does not run at all ("" = it runs)
	adminPort      int               // tenantguard's admin listener, for profiles; 0 otherwise
}

// runGrace is how long pgbench may run past -T (connecting, finishing the
// last transactions) before it counts as hung.
const runGrace = 30 * time.Second

// workload is one pgbench script.
type workload struct {
	name string
	args []string
}

// workloads are pgbench's built-in select-only and TPC-B-like scripts.
var workloads = []workload{
	{name: "select-only", args: []string{"-S"}},
	{name: "tpcb-like"},
}

// result is one target's runs for one workload and protocol mode.
type result struct {
	tps      []float64 // one per round
	txns     int64     // transactions over all rounds
	cpuTicks int64     // proxy CPU time over all rounds
	skipped  string    // why the target was not run, if it was not
}

// row is one workload and mode, with a result per target (same order).
type row struct {
	workload, mode string
	results        []*result
}

// runMatrix runs every workload × mode × round × target. Within a round the
// targets run one after another, starting with a different one each round, so
// slow drift (caches, table bloat, thermal) hits every target alike.
func runMatrix(ctx context.Context, o options, targets []*target) ([]row, error) {
	var rows []row
	for _, w := range workloads {
		if o.workloads != nil && !o.workloads[w.name] {
			continue
		}
		for _, mode := range o.modes {
			r := row{workload: w.name, mode: mode}
			for _, t := range targets {
				skip := t.skipModes[mode]
				if t.skipAll != "" {
					skip = t.skipAll
				}
				r.results = append(r.results, &result{skipped: skip})
			}
			for round := range o.Rounds {
				for i := range targets {
					k := (i + round) % len(targets)
					t, res := targets[k], r.results[k]
					if res.skipped != "" {
						continue
					}
					if err := runOnce(ctx, o, t, w, mode, res); err != nil {
						return nil, err
					}
					benchkit.Logf("%-11s %-8s round %d/%d %-15s %10.0f tps", w.name, mode, round+1, o.Rounds, t.name, res.tps[len(res.tps)-1])
				}
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

var (
	tpsRe    = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	failedRe = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	txnsRe   = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
)

// runOnce runs pgbench once against t and adds the outcome to res. Any
// failed transaction or non-zero exit is an error.
func runOnce(ctx context.Context, o options, t *target, w workload, mode string, res *result) error {
	args := []string{"-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs),
		"-T", strconv.Itoa(int(o.duration.Seconds())), "-M", mode}
	args = append(args, w.args...)
	var out pgbenchOut
	stopProfile := startProfile(ctx, o, t, fmt.Sprintf("%s-%s-%s", t.name, w.name, mode))
	ticks, err := benchkit.CPUDuring(t.svc, func() (err error) {
		out, err = runPgbench(ctx, fmt.Sprintf("pgbench %s -M %s via %s", w.name, mode, t.name), t, o.duration, args)
		return err
	})
	stopProfile()
	if err != nil {
		return err
	}
	res.cpuTicks += ticks
	res.tps = append(res.tps, out.tps)
	res.txns += out.txns
	return nil
}

// pgbenchOut is what runPgbench reads from pgbench's summary.
type pgbenchOut struct {
	tps  float64
	txns int64
}

// runPgbench runs pgbench with args (which must include -T duration)
// against t. A non-zero exit, a failed transaction, a proxy that died or a
// run that hangs past its duration is an error carrying pgbench's output
// and the proxy's log; what names the run in it.
func runPgbench(ctx context.Context, what string, t *target, duration time.Duration, args []string) (pgbenchOut, error) {
	args = append(slices.Clip(args), "-h", "127.0.0.1", "-p", strconv.Itoa(t.port), "-U", t.user, dbName)
	tool := benchkit.Tool{What: what, Svc: t.svc, Timeout: duration + runGrace,
		Hung:   fmt.Sprintf("pgbench still running %s after its -T ended, killed it", runGrace),
		Output: func(out []byte) string { return string(out) }}
	out, err := tool.Run(ctx, func(ctx context.Context) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "pgbench", args...)
		cmd.Env = pgEnv(t.password)
		return cmd
	})
	if err != nil {
		return pgbenchOut{}, err
	}
	tps, err1 := match(tpsRe, out)
	failed, err2 := match(failedRe, out)
	txns, err3 := match(txnsRe, out)
	if err1 != nil || err2 != nil || err3 != nil {
		return pgbenchOut{}, fmt.Errorf("%s: cannot parse output:\n%s", what, out)
	}
	if failed != 0 {
		return pgbenchOut{}, fmt.Errorf("%s: %.0f failed transactions:\n%s%s", what, failed, out, t.svc.LogTail())
	}
	return pgbenchOut{tps: tps, txns: int64(txns)}, nil
}

// match returns the number in re's first group.
func match(re *regexp.Regexp, out []byte) (float64, error) {
	m := re.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no match for %s", re)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// startProfile fetches a CPU profile of a tenantguard target covering most
// of a run into o.profile/<name>.pprof (-profile); the returned function
// waits for it. It does nothing for other targets or without -profile.
func startProfile(ctx context.Context, o options, t *target, name string) func() {
	if o.profile == "" || t.adminPort == 0 {
		return func() {}
	}
	secs := max(int(o.duration.Seconds())-1, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", t.adminPort, secs)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			benchkit.Logf("profile %s: %v", name, err)
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			benchkit.Logf("profile %s: %v", name, err)
			return
		}
		defer resp.Body.Close()
		path := filepath.Join(o.profile, name+".pprof")
		f, err := os.Create(path)
		if err == nil {
			_, err = io.Copy(f, resp.Body)
			err = errors.Join(err, f.Close())
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			benchkit.Logf("profile %s: status %d: %v", name, resp.StatusCode, err)
			return
		}
		benchkit.Logf("profile written to %s", path)
	}()
	return func() { <-done }
}
