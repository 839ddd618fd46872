// Command move measures a tenant move between two PostgreSQL clusters
// (tenantguard tenant move, issue 14): the tenant's size, the rows per
// second the initial copy reaches, and the pause the tenant sees at the
// switch while pgbench runs as that tenant at a fixed rate.
//
//	go build -o bin/tenantguard ./cmd/tenantguard && go run ./bench/move -rows 100000 -rate 300
//
// It starts two throwaway PostgreSQL clusters (wal_level=logical), a
// control plane (its store on the first) and a sidecar as processes. acme
// has -rows rows in orders on cluster a; globex a few. Each round, pgbench
// runs as acme through the sidecar at -rate transactions per second
// (pgbench -R: an insert and a point select), the move starts through the
// admin API and is followed to its end, and pgbench stops. Rounds
// alternate a → b and b → a, so that each starts from a tenant with rows
// on one cluster and none on the other.
//
// Reported per round: rows copied and the copy's rows per second (from
// the operation's result: the initial copy with copy_data until every
// table is ready), the pause (pause_ms: from the version pausing acme
// accepted by the sidecar to the version switching it accepted), the
// whole move's time, and acme's pgbench: transactions, failures, and its
// slowest transaction's latency (pgbench -l), which shows the pause as
// the tenant sees it. The machine is shared by four processes and two
// servers: run it on an otherwise idle machine.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

type options struct {
	benchkit.Options
	rows int
	rate int
}

func main() {
	benchkit.Main("move", func(args []string) (options, error) {
		var o options
		fs := flag.NewFlagSet("move", flag.ContinueOnError)
		o.Register(fs, "pause")
		fs.IntVar(&o.rows, "rows", 100_000, "the moved tenant's rows")
		fs.IntVar(&o.rate, "rate", 300, "pgbench -R: the moved tenant's transactions per second during the move")
		return o, o.Parse(fs, args)
	}, run)
}

const (
	db         = "bench_app"
	role       = "bench_app"
	rolePW     = "bench_app_pw"
	bindingKey = "bench-move-binding-key-0123456789"
	adminToken = "bench-admin-token-0123456789"
)

func run(ctx context.Context, o options) error {
	if err := benchkit.EnsureBinary(ctx, o.Tenantguard); err != nil {
		return err
	}
	bin, err := filepath.Abs(o.Tenantguard)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("pgbench"); err != nil {
		return errors.New("pgbench is not installed")
	}
	binder, err := rls.NewBinder([]byte(bindingKey), time.Hour)
	if err != nil {
		return err
	}
	var clusters [2]*pgcluster.Cluster
	for i := range clusters {
		c, err := pgcluster.Start(ctx, pgcluster.Options{ExtraConf: map[string]string{"wal_level": "logical"}})
		if err != nil {
			return err
		}
		defer c.Close()
		if err := setupSchema(ctx, c, binder); err != nil {
			return err
		}
		clusters[i] = c
	}
	a, b := clusters[0], clusters[1]
	benchkit.Logf("seeding %d rows of acme on cluster a", o.rows)
	if err := a.Exec(ctx, db, fmt.Sprintf(`INSERT INTO orders (tenant_id, item, amount)
		SELECT 'acme', 'item ' || g || ' ' || md5(g::text), g %% 1000 FROM generate_series(1, %d) g;
		INSERT INTO orders (tenant_id, item, amount) SELECT 'globex', 'globex ' || g, g FROM generate_series(1, 1000) g;
		ANALYZE orders`, o.rows)); err != nil {
		return err
	}
	if err := a.CreateDatabase(ctx, "bench_cp"); err != nil {
		return err
	}
	ports, err := benchkit.FreePorts(4)
	if err != nil {
		return err
	}
	xdsAddr, cpAdmin := benchkit.LocalAddr(ports[0]), benchkit.LocalAddr(ports[1])
	listen, scAdmin := benchkit.LocalAddr(ports[2]), benchkit.LocalAddr(ports[3])

	cp, err := benchkit.NewService("controlplane", "tg-bench-move-cp-")
	if err != nil {
		return err
	}
	defer cp.Stop()
	pol := fmt.Sprintf(`name: default
clusters:
  - {name: a, default: true, postgres: {hosts: ["127.0.0.1:%d"]}}
  - {name: b, postgres: {hosts: ["127.0.0.1:%d"]}}
tables:
  - {name: public.orders, tenant_column: tenant_id}
tenants:
  - {id: acme, credentials: ["acme-secret-1"]}
  - {id: globex, credentials: ["globex-secret-1"]}
`, a.Port(), b.Port())
	if err := os.WriteFile(filepath.Join(cp.Dir, "policy.yaml"), []byte(pol), 0o600); err != nil {
		return err
	}
	cpCfg := fmt.Sprintf(`listen: {xds: %q, admin: %q}
database: %q
admin_token: %s
seed: policy.yaml
lifecycle:
  move:
    clusters:
      a: {admin_url: %q}
      b: {admin_url: %q}
`, xdsAddr, cpAdmin, a.AdminURL("bench_cp"), adminToken, a.AdminURL(db), b.AdminURL(db))
	if err := os.WriteFile(filepath.Join(cp.Dir, "controlplane.yaml"), []byte(cpCfg), 0o600); err != nil {
		return err
	}
	cp.Addr = cpAdmin
	if err := cp.Start(ctx, httpReady("http://"+cpAdmin+"/readyz"), bin, "controlplane", "--config", "controlplane.yaml", "--log-level", "warn"); err != nil {
		return err
	}
	sc, err := benchkit.NewService("sidecar", "tg-bench-move-sc-")
	if err != nil {
		return err
	}
	defer sc.Stop()
	scCfg := fmt.Sprintf(`listen: {postgres: %q, admin: %q}
postgres:
  databases:
    - name: app
      url: "postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable"
isolation:
  binding_key: %q
  tables:
    - {name: public.orders, tenant_column: tenant_id}
controlplane:
  address: %q
  node_id: bench-move-sidecar
`, listen, scAdmin, role, rolePW, a.Port(), db, bindingKey, xdsAddr)
	if err := os.WriteFile(filepath.Join(sc.Dir, "sidecar.yaml"), []byte(scCfg), 0o600); err != nil {
		return err
	}
	sc.Addr = listen
	if err := sc.Start(ctx, httpReady("http://"+scAdmin+"/readyz"), bin, "sidecar", "--config", "sidecar.yaml", "--log-level", "warn"); err != nil {
		return err
	}
	acmeURL := fmt.Sprintf("postgres://acme:acme-secret-1@%s/app?sslmode=disable", listen)
	script := filepath.Join(sc.Dir, "acme.sql")
	if err := os.WriteFile(script, []byte("\\set n random(1, 1000000)\nBEGIN;\nINSERT INTO orders (item, amount) VALUES ('bench ' || :n, :n);\nSELECT item FROM orders WHERE id = :n;\nEND;\n"), 0o600); err != nil {
		return err
	}

	rep := benchkit.Report{
		Setup: fmt.Sprintf("acme: %d rows in orders at the start (plus its pgbench inserts); pgbench as acme through the sidecar at -R %d (insert and point select per transaction), 2 clients; %d round(s), alternating a → b and b → a.",
			o.rows, o.rate, o.Rounds),
	}
	tbl := benchkit.Table{Left: 2, Header: []string{"round", "direction", "rows copied", "copy s", "rows/s copied", "pause ms", "move s", "acme tx", "acme failed", "acme max latency ms", "paused steps ms"}}
	to := "b"
	for round := range o.Rounds {
		from := map[string]string{"a": "b", "b": "a"}[to]
		benchkit.Logf("round %d: move acme %s → %s with pgbench -R %d", round+1, from, to, o.rate)
		r, err := moveOnce(ctx, cpAdmin, acmeURL, script, sc.Dir, to, o.rate)
		if err != nil {
			return fmt.Errorf("round %d: %w", round+1, err)
		}
		if err := sc.Alive(); err != nil {
			return err
		}
		tbl.Rows = append(tbl.Rows, []string{strconv.Itoa(round + 1), from + " → " + to,
			strconv.FormatInt(r.copied, 10), fmt.Sprintf("%.1f", float64(r.copyMS)/1000), strconv.FormatInt(r.rowsPerSec, 10),
			strconv.FormatInt(r.pauseMS, 10), fmt.Sprintf("%.1f", r.took.Seconds()),
			strconv.Itoa(r.tx), strconv.Itoa(r.failed), fmt.Sprintf("%.0f", r.maxLatencyMS), r.steps})
		to = from
	}
	rep.Tables = append(rep.Tables, tbl)
	rep.Notes = append(rep.Notes,
		"pause ms: from the version pausing acme accepted by the sidecar to the version switching it to the other cluster accepted (the operation's pause_ms). acme max latency: its slowest pgbench transaction (pgbench -l), the pause as the tenant sees it, plus the pgbench schedule lag it causes at -R.",
		"paused steps ms: how long each step from pause to switch took (pause and switch include waiting for the sidecar's ACK), with +n the engine's gap between one step's end and the next's start.",
		"rows/s copied: the initial copy (CREATE SUBSCRIPTION … copy_data = true) until every table is ready, from the operation's result.",
		"Unmeasured on a shared machine: run on an otherwise idle one.")
	return rep.Write(o.Out)
}

// setupSchema creates the application database, its role and orders, row
// isolated (as pg bootstrap does).
func setupSchema(ctx context.Context, c *pgcluster.Cluster, b *rls.Binder) error {
	if err := c.Exec(ctx, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' NOSUPERUSER NOBYPASSRLS", role, rolePW)); err != nil {
		return err
	}
	if err := c.CreateDatabase(ctx, db); err != nil {
		return err
	}
	if err := c.Exec(ctx, db, `CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL, amount numeric NOT NULL DEFAULT 0);
		GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO `+role); err != nil {
		return err
	}
	snap, err := policy.Compile(policy.Spec{Tables: []policy.TableSpec{{Name: "public.orders", TenantColumn: "tenant_id"}}})
	if err != nil {
		return err
	}
	admin, err := pgx.Connect(ctx, c.AdminURL(db))
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())
	return rls.Bootstrap(ctx, admin, role, snap, b)
}

func httpReady(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %d", url, resp.StatusCode)
		}
		return nil
	}
}

type moveResult struct {
	copied, copyMS, rowsPerSec, pauseMS int64
	took                                time.Duration
	tx, failed                          int
	maxLatencyMS                        float64
	steps                               string // stepsMS
}

var failedRE = regexp.MustCompile(`number of failed transactions: (\d+)`)

// moveOnce runs pgbench as acme, moves acme to cluster to, and stops
// pgbench once the move has ended.
func moveOnce(ctx context.Context, cpAdmin, acmeURL, script, dir, to string, rate int) (moveResult, error) {
	var res moveResult
	logDir, err := os.MkdirTemp(dir, "pgbench-")
	if err != nil {
		return res, err
	}
	bctx, stopBench := context.WithCancel(ctx)
	defer stopBench()
	bench := exec.CommandContext(bctx, "pgbench", "-n", "-c", "2", "-j", "2", "-R", strconv.Itoa(rate), "-T", "3600",
		"-l", "--log-prefix", filepath.Join(logDir, "acme"), "-f", script, acmeURL)
	bench.Cancel = func() error { return bench.Process.Signal(os.Interrupt) } // pgbench prints its summary on SIGINT
	var out bytes.Buffer
	bench.Stdout, bench.Stderr = &out, &out
	if err := bench.Start(); err != nil {
		return res, err
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	select { // let pgbench reach its rate
	case err := <-benchDone:
		return res, fmt.Errorf("pgbench ended at once: %v\n%s", err, out.String())
	case <-time.After(3 * time.Second):
	}
	started := time.Now()
	op, err := startMove(ctx, cpAdmin, to)
	if err != nil {
		stopBench()
		<-benchDone
		return res, err
	}
	final, err := follow(ctx, cpAdmin, op)
	res.took = time.Since(started)
	select { // a little load after the switch
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
	}
	stopBench()
	<-benchDone
	if err != nil {
		return res, err
	}
	var r struct {
		Copy struct {
			Rows          int64 `json:"rows"`
			MS            int64 `json:"ms"`
			RowsPerSecond int64 `json:"rows_per_second"`
			LagBytes      int64 `json:"lag_bytes"`
		} `json:"copy"`
		PauseMS       int64 `json:"pause_ms"`
		CatchUpWaitMS int64 `json:"catch_up_wait_ms"`
	}
	if err := json.Unmarshal(final.Result, &r); err != nil {
		return res, fmt.Errorf("operation result: %w", err)
	}
	res.copied, res.copyMS, res.rowsPerSec, res.pauseMS = r.Copy.Rows, r.Copy.MS, r.Copy.RowsPerSecond, r.PauseMS
	res.steps = stepsMS(final) + fmt.Sprintf(" (lag at the pause %d KiB, catch_up waited %d)", r.Copy.LagBytes>>10, r.CatchUpWaitMS)
	if m := failedRE.FindStringSubmatch(out.String()); m != nil {
		res.failed, _ = strconv.Atoi(m[1])
	}
	res.tx, res.maxLatencyMS, err = readLogs(logDir)
	return res, err
}

type operation struct {
	ID     string          `json:"id"`
	State  string          `json:"state"`
	Error  string          `json:"error"`
	Result json.RawMessage `json:"result"`
	Steps  []struct {
		Name       string     `json:"name"`
		StartedAt  *time.Time `json:"started_at"`
		FinishedAt *time.Time `json:"finished_at"`
	} `json:"steps"`
}

// pausedSteps are the steps that run while the tenant is paused, in order.
var pausedSteps = []string{"pause", "catch_up", "sync_sequences", "verify", "switch"}

// stepsMS is how long each of pausedSteps took, in ms, as "name ms" pairs
// (pause and switch include waiting for the sidecars' ACK), and the gaps
// between them (the engine recording a step's end and starting the next).
func stepsMS(op operation) string {
	var parts []string
	var prevEnd *time.Time
	for _, name := range pausedSteps {
		for _, st := range op.Steps {
			if st.Name != name || st.StartedAt == nil || st.FinishedAt == nil {
				continue
			}
			if prevEnd != nil {
				parts = append(parts, fmt.Sprintf("+%d", st.StartedAt.Sub(*prevEnd).Milliseconds()))
			}
			parts = append(parts, fmt.Sprintf("%s %d", name, st.FinishedAt.Sub(*st.StartedAt).Milliseconds()))
			prevEnd = st.FinishedAt
		}
	}
	return strings.Join(parts, " ")
}

func api(ctx context.Context, method, url string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

func startMove(ctx context.Context, cpAdmin, to string) (string, error) {
	var op operation
	err := api(ctx, http.MethodPost, "http://"+cpAdmin+"/v1/tenants/acme/move", strings.NewReader(fmt.Sprintf(`{"postgres": %q}`, to)), &op)
	return op.ID, err
}

func follow(ctx context.Context, cpAdmin, id string) (operation, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var op operation
		if err := api(ctx, http.MethodGet, "http://"+cpAdmin+"/v1/operations/"+id, nil, &op); err != nil {
			return op, err
		}
		switch op.State {
		case "succeeded":
			return op, nil
		case "failed", "cancelled":
			return op, fmt.Errorf("move %s: %s", op.State, op.Error)
		}
		select {
		case <-ctx.Done():
			return op, ctx.Err()
		case <-tick.C:
		}
	}
}

// readLogs reads pgbench's per-transaction logs (client, transaction,
// latency µs, script, epoch, µs[, lag]): the transactions and the
// slowest's latency in ms.
func readLogs(dir string) (int, float64, error) {
	files, err := filepath.Glob(filepath.Join(dir, "acme*"))
	if err != nil || len(files) == 0 {
		return 0, 0, fmt.Errorf("no pgbench log in %s: %v", dir, err)
	}
	n, slowest := 0, 0.0
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return 0, 0, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			us, err := strconv.ParseFloat(fields[2], 64)
			if err != nil {
				continue // "skipped" or "failed"
			}
			n++
			slowest = max(slowest, us/1000)
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return 0, 0, err
		}
	}
	return n, slowest, nil
}
