package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/internal/lifecycletest"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	"github.com/tenantguard/tenantguard/test/harness"
)

// moveTables are the lifecycle tables and orders, whose primary key lacks
// the tenant column (a move gives it REPLICA IDENTITY FULL for the time
// of the move) and whose id is a bigserial (its sequence is carried).
var moveTables = append(append([]policy.TableSpec{}, lifecycletest.Tables...), policy.TableSpec{Name: "public.orders", TenantColumn: "tenant_id"})

// moveCluster starts a PostgreSQL cluster of the test's own, with
// wal_level=logical (a move's source needs it), and the application
// database db on it: the lifecycle schema, orders, row isolation.
func moveCluster(t *testing.T, db string) *lifecycletest.Upstream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgcluster.Start(ctx, pgcluster.Options{ExtraConf: map[string]string{"wal_level": "logical"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	up := lifecycletest.Setup(t, pg, db)
	if err := pg.Exec(ctx, db, `CREATE TABLE public.orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL);
		GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO `+lifecycletest.Role); err != nil {
		t.Fatal(err)
	}
	snap, err := policy.Compile(policy.Spec{Tables: moveTables})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, up.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if err := rls.Bootstrap(ctx, admin, lifecycletest.Role, snap, up.Binder); err != nil {
		t.Fatal(err)
	}
	return up
}

// tenantState is a tenant's rows on one cluster as the superuser reads
// them: a line per row, per table, in key order (order-independent of
// the cluster: the same rows give the same text).
func tenantState(t *testing.T, up *lifecycletest.Upstream, tenant string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, up.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "SET TimeZone = 'UTC'"); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tbl := range moveTables {
		if tbl.Shared {
			continue
		}
		rows, err := c.Query(ctx, "SELECT t::text FROM "+tbl.Name+" t WHERE tenant_id = $1 ORDER BY t::text", tenant)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out[tbl.Name] = strings.Join(lines, "\n")
	}
	return out
}

func countRows(st map[string]string) int {
	n := 0
	for _, v := range st {
		if v != "" {
			n += strings.Count(v, "\n") + 1
		}
	}
	return n
}

// replicationLeft lists the publications, subscriptions, replication
// slots and marker table a move may leave on a cluster.
func replicationLeft(t *testing.T, up *lifecycletest.Upstream) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, up.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var left string
	if err := c.QueryRow(ctx, `SELECT concat_ws(' ',
		(SELECT string_agg('publication ' || pubname, ' ') FROM pg_publication),
		(SELECT string_agg('subscription ' || subname, ' ') FROM pg_subscription),
		(SELECT string_agg('slot ' || slot_name, ' ') FROM pg_replication_slots),
		CASE WHEN to_regclass('tenantguard.move_marker') IS NOT NULL THEN 'table tenantguard.move_marker' END)`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	return left
}

func replicaIdentity(t *testing.T, up *lifecycletest.Upstream, table string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, up.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var id string
	if err := c.QueryRow(ctx, "SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)", table).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// policyTenant returns a tenant of the current policy as the API shows it.
func policyTenant(t *testing.T, api, id string) map[string]any {
	t.Helper()
	var p struct {
		Tenants []map[string]any `json:"tenants"`
	}
	if st := callJSON(t, api, e2eAdminToken, "GET", "/v1/policy", "", &p); st != http.StatusOK {
		t.Fatalf("GET policy: %d", st)
	}
	for _, tn := range p.Tenants {
		if tn["id"] == id {
			return tn
		}
	}
	t.Fatalf("no tenant %s in the policy", id)
	return nil
}

func waitOperation(t *testing.T, api, id string, timeout time.Duration) adminapi.OperationView {
	t.Helper()
	var op adminapi.OperationView
	harness.Eventually(t, timeout, func() error {
		op = getOperation(t, api, id)
		if op.State == "running" || op.State == "compensating" {
			return fmt.Errorf("operation %s still %s at step %d", id, op.State, op.Step)
		}
		return nil
	})
	return op
}

// TestTenantMove moves tenants between two real PostgreSQL clusters
// through control planes and a sidecar run as processes:
//
//  1. a move whose copy the target refuses (a CHECK constraint the
//     source's rows break) is undone: nothing of the tenant at the
//     target, no publication, subscription or slot left, the replica
//     identity put back, the tenant unpaused on its cluster, its rows at
//     the source unchanged;
//  2. a move whose control plane is killed with SIGKILL while it waits for
//     the sidecar to accept the pause is finished by another control
//     plane: the rows are on the target and gone from the source;
//  3. acme moves while it writes through the sidecar in a loop and globex
//     runs pgbench: globex sees no error, acme's transactions only wait,
//     every insert acme was told committed is on the target, its rows are
//     gone from the source, and the pause is measured in the result and
//     the audit record.
func TestTenantMove(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two clusters and several processes")
	}
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Skip("pgbench not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const db = "move_app"
	a, b := moveCluster(t, db), moveCluster(t, db)
	cpDB := "move_cp"
	if err := a.PG.CreateDatabase(ctx, cpDB); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var pol strings.Builder
	fmt.Fprintf(&pol, "name: default\nclusters:\n  - {name: a, default: true, postgres: {hosts: [\"127.0.0.1:%d\"]}}\n  - {name: b, postgres: {hosts: [\"127.0.0.1:%d\"]}}\ntables:\n", a.PG.Port(), b.PG.Port())
	for _, tbl := range moveTables {
		if tbl.Shared {
			fmt.Fprintf(&pol, "  - {name: %s, shared: true}\n", tbl.Name)
		} else {
			fmt.Fprintf(&pol, "  - {name: %s, tenant_column: %s}\n", tbl.Name, tbl.TenantColumn)
		}
	}
	pol.WriteString("tenants:\n")
	for _, tn := range []string{"acme", "globex", "initech"} {
		fmt.Fprintf(&pol, "  - {id: %s, credentials: [%q]}\n", tn, lifecycletest.Password(tn))
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(pol.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tn := range []string{"acme", "globex", "initech"} {
		a.SeedRows(t, tn, 30)
		if err := a.PG.Exec(ctx, db, fmt.Sprintf("INSERT INTO orders (tenant_id, item) SELECT '%s', '%s order ' || g FROM generate_series(1, 50) g", tn, tn)); err != nil {
			t.Fatal(err)
		}
	}
	xdsAddr := freeAddr(t)
	controlPlane := func(name, xds string) (*process, string) {
		admin := freeAddr(t)
		cfg := filepath.Join(dir, name+".yaml")
		body := fmt.Sprintf(`listen: {xds: %q, admin: %q}
database: %q
admin_token: %s
xds_token: %s
seed: policy.yaml
lifecycle:
  lease: 2s
  ready_timeout: 30s
  move:
    clusters:
      a: {admin_url: %q}
      b: {admin_url: %q}
`, xds, admin, a.PG.AdminURL(cpDB), e2eAdminToken, xdsToken, a.AdminURL, b.AdminURL)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cp := start(t, "controlplane", "--config", cfg)
		harness.Eventually(t, 60*time.Second, func() error {
			if err := cp.exited(); err != nil {
				t.Fatalf("controlplane %s exited: %v\n%s", name, err, cp.output())
			}
			code, _, err := httpGet(ctx, "http://"+admin+"/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("readyz %d %v", code, err)
			}
			return nil
		})
		return cp, "http://" + admin
	}
	cpA, apiA := controlPlane("cp-a", xdsAddr)

	listen, scAdmin := freeAddr(t), freeAddr(t)
	var tables strings.Builder
	for _, tbl := range moveTables {
		if tbl.Shared {
			fmt.Fprintf(&tables, "    - {name: %s, shared: true}\n", tbl.Name)
		} else {
			fmt.Fprintf(&tables, "    - {name: %s, tenant_column: %s}\n", tbl.Name, tbl.TenantColumn)
		}
	}
	scCfg := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(scCfg, []byte(fmt.Sprintf(`listen: {postgres: %q, admin: %q}
postgres:
  databases:
    - name: app
      url: %q
isolation:
  binding_key: %q
  tables:
%scontrolplane:
  address: %q
  node_id: move-sidecar
  token: %s
drain_timeout: 2s
`, listen, scAdmin, a.AppURL, lifecycletest.BindingKey, tables.String(), xdsAddr, xdsToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := start(t, "sidecar", "--config", scCfg)
	harness.Eventually(t, 60*time.Second, func() error {
		if err := sc.exited(); err != nil {
			t.Fatalf("sidecar exited: %v\n%s", err, sc.output())
		}
		code, _, err := httpGet(ctx, "http://"+scAdmin+"/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("readyz %d %v", code, err)
		}
		return nil
	})
	tenantURL := func(tenant string) string {
		return fmt.Sprintf("postgres://%s:%s@%s/app?sslmode=disable", tenant, lifecycletest.Password(tenant), listen)
	}

	// 1. The target refuses one of initech's customers: the copy fails,
	// and everything the move did is undone.
	if err := a.PG.Exec(ctx, db, "INSERT INTO customers VALUES ('initech', 999, 'poison customer', NULL)"); err != nil {
		t.Fatal(err)
	}
	if err := b.PG.Exec(ctx, db, "ALTER TABLE customers ADD CONSTRAINT no_poison CHECK (name NOT LIKE '%poison%')"); err != nil {
		t.Fatal(err)
	}
	initechBefore := tenantState(t, a, "initech")
	globexBefore := tenantState(t, a, "globex")
	code, out := (&lifecycleEnv{t: t, dir: dir}).cli(apiA, "move", "initech", "--to", "b")
	if code != 1 || !strings.Contains(out, "failed") || !strings.Contains(out, "subscription") {
		t.Fatalf("move refused by the target: exit %d\n%s", code, out)
	}
	failed := operations(t, apiA, "initech")[0]
	undone := map[string]string{}
	for _, s := range failed.Steps {
		undone[s.Name] = s.Status
	}
	for _, name := range []string{"replica_identity", "create_publication", "create_subscription"} {
		if undone[name] != "undone" {
			t.Errorf("step %s is %q after the failed move, want undone: %+v", name, undone[name], failed.Steps)
		}
	}
	if n := countRows(tenantState(t, b, "initech")); n != 0 {
		t.Errorf("%d rows of initech left at the target after the undo", n)
	}
	if left := replicationLeft(t, a) + replicationLeft(t, b); strings.TrimSpace(left) != "" {
		t.Errorf("replication left after the undo: %s", left)
	}
	if id := replicaIdentity(t, a, "public.orders"); id != "d" {
		t.Errorf("orders' replica identity is %q after the undo, want d (default)", id)
	}
	if got := tenantState(t, a, "initech"); fmt.Sprint(got) != fmt.Sprint(initechBefore) {
		t.Errorf("initech's rows at the source changed by a failed move")
	}
	if tn := policyTenant(t, apiA, "initech"); tn["paused"] == true || tn["placement"] != nil {
		t.Errorf("initech after the failed move: %v", tn)
	}
	if err := a.PG.Exec(ctx, db, "DELETE FROM customers WHERE tenant_id = 'initech' AND id = 999"); err != nil {
		t.Fatal(err)
	}
	initechBefore = tenantState(t, a, "initech")

	// 1b. catch_up waits until the target has applied everything the
	// source committed before the pause. The sidecar is stopped while the
	// move (copy done) waits at the pause; meanwhile a lock at the target
	// blocks the apply of an initech order committed at the source. The
	// move must fail at catch_up, within its timeout, and be undone: had
	// catch_up not waited, the move would have gone on with the order
	// missing at the target, to fail later at verify if at all.
	if err := sc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = sc.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	var blocked adminapi.OperationView
	if st := callJSON(t, apiA, e2eAdminToken, "POST", "/v1/tenants/initech/move", `{"postgres": "b", "catchup_timeout": "3s"}`, &blocked); st != http.StatusAccepted {
		t.Fatalf("move: %d %+v", st, blocked)
	}
	waitPauseBlocked := func(api, id string) {
		harness.Eventually(t, 2*time.Minute, func() error {
			cur := getOperation(t, api, id)
			if cur.State != "running" {
				t.Fatalf("move ended while the sidecar could not accept the pause: %+v", cur)
			}
			for _, s := range cur.Steps {
				if s.Name == "pause" && s.Status == "running" && strings.Contains(s.Message, "move-sidecar") {
					return nil
				}
			}
			return fmt.Errorf("not waiting for the pause yet: step %d", cur.Step)
		})
	}
	waitPauseBlocked(apiA, blocked.ID)
	lockConn, err := pgx.Connect(ctx, b.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer lockConn.Close(context.Background()) // also on a failure before the lock's release below
	lockTx, err := lockConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockTx.Exec(ctx, "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	if err := a.PG.Exec(ctx, db, "INSERT INTO orders (tenant_id, item) VALUES ('initech', 'committed before the pause ended')"); err != nil {
		t.Fatal(err)
	}
	if err := sc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	// The undo deletes initech's rows at the target, which the lock would
	// block: let go once catch_up has given up.
	harness.Eventually(t, 2*time.Minute, func() error {
		cur := getOperation(t, apiA, blocked.ID)
		for _, s := range cur.Steps {
			if s.Name == "catch_up" && s.Status != "pending" && s.Status != "running" {
				return nil
			}
		}
		if cur.State != "running" {
			return nil
		}
		return fmt.Errorf("catch_up not over yet: step %d", cur.Step)
	})
	_ = lockTx.Rollback(ctx)
	_ = lockConn.Close(ctx)
	failedAt := waitOperation(t, apiA, blocked.ID, 2*time.Minute)
	status := map[string]string{}
	for _, s := range failedAt.Steps {
		status[s.Name] = s.Status
	}
	if failedAt.State != "failed" || status["catch_up"] != "failed" || !strings.Contains(failedAt.Error, "marker") {
		t.Fatalf("move with the target's apply blocked: want it failed at catch_up (the marker not applied), got %s, steps %v, error %q",
			failedAt.State, status, failedAt.Error)
	}
	for _, name := range []string{"sync_sequences", "verify", "switch"} {
		if st := status[name]; st != "pending" {
			t.Errorf("step %s is %q after a failed catch_up, want it never run", name, st)
		}
	}
	if tn := policyTenant(t, apiA, "initech"); tn["paused"] == true || tn["placement"] != nil {
		t.Errorf("initech after the move failed at catch_up: %v", tn)
	}
	if left := replicationLeft(t, a) + replicationLeft(t, b); strings.TrimSpace(left) != "" {
		t.Errorf("replication left after the undo: %s", left)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		c, err := pgx.Connect(ctx, tenantURL("initech"))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE item = 'committed before the pause ended'").Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("initech sees %d of its order through the sidecar, want 1", n)
		}
		return nil
	})
	if err := a.PG.Exec(ctx, db, "DELETE FROM orders WHERE item = 'committed before the pause ended'"); err != nil {
		t.Fatal(err)
	}
	initechBefore = tenantState(t, a, "initech")

	// 2. The control plane running initech's move dies with SIGKILL while
	// it waits for the sidecar (stopped) to accept the pause; another,
	// on the same addresses, finishes it.
	if err := sc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped = true
	var op adminapi.OperationView
	if st := callJSON(t, apiA, e2eAdminToken, "POST", "/v1/tenants/initech/move", `{"postgres": "b"}`, &op); st != http.StatusAccepted {
		t.Fatalf("move: %d %+v", st, op)
	}
	waitPauseBlocked(apiA, op.ID)
	if err := cpA.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cpA.wait(t, 10*time.Second)
	_, apiC := controlPlane("cp-c", xdsAddr)
	if err := sc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	done := waitOperation(t, apiC, op.ID, 2*time.Minute)
	if done.State != "succeeded" || done.Claims < 2 {
		t.Fatalf("move after the takeover: %+v\n%s", done, done.Error)
	}
	if got := tenantState(t, b, "initech"); fmt.Sprint(got) != fmt.Sprint(initechBefore) {
		t.Errorf("initech at the target differs from what it had at the source:\n%v\n%v", got, initechBefore)
	}
	if n := countRows(tenantState(t, a, "initech")); n != 0 {
		t.Errorf("%d rows of initech left at the source", n)
	}
	if tn := policyTenant(t, apiC, "initech"); tn["paused"] == true || fmt.Sprint(tn["placement"]) != "map[postgres:b]" {
		t.Errorf("initech after its move: %v", tn)
	}
	if left := replicationLeft(t, a) + replicationLeft(t, b); strings.TrimSpace(left) != "" {
		t.Errorf("replication left after the move: %s", left)
	}

	// 3. acme moves while it writes and globex runs pgbench.
	acmeSeq := func() int64 {
		var v int64
		c, err := pgx.Connect(ctx, a.AdminURL)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if err := c.QueryRow(ctx, "SELECT last_value FROM orders_id_seq").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	script := filepath.Join(dir, "globex.sql")
	if err := os.WriteFile(script, []byte("BEGIN;\nINSERT INTO orders (item) VALUES ('bench');\nSELECT count(*) FROM customers;\nEND;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bench := exec.CommandContext(ctx, "pgbench", "-n", "-c", "2", "-j", "2", "-T", "40", "-f", script, tenantURL("globex"))
	var benchOut strings.Builder
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	defer func() {
		if bench.ProcessState == nil {
			_ = bench.Process.Kill()
			<-benchDone
		}
	}()
	// acme's writers: each insert the sidecar confirms must be at the
	// target in the end; none may fail.
	type write struct {
		began time.Time
		port  string
	}
	var (
		mu        sync.Mutex
		writes    []write
		committed []string
		acmeErrs  []error
		slowest   time.Duration
		stop      atomic.Bool
		writers   sync.WaitGroup
	)
	for w := range 2 {
		c, err := pgx.Connect(ctx, tenantURL("acme"))
		if err != nil {
			t.Fatalf("acme through the sidecar: %v", err)
		}
		defer c.Close(context.Background())
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; !stop.Load(); i++ {
				item := fmt.Sprintf("live-%d-%d", w, i)
				began := time.Now()
				var port string
				err := c.QueryRow(ctx, "INSERT INTO orders (item) VALUES ($1) RETURNING current_setting('port')", item).Scan(&port)
				if err == nil && i%5 == 0 {
					_, err = c.Exec(ctx, "UPDATE customers SET name = name || '+' WHERE id = $1", 1+i%30)
				}
				d := time.Since(began)
				mu.Lock()
				if err != nil {
					acmeErrs = append(acmeErrs, err)
				} else {
					committed = append(committed, item)
					writes = append(writes, write{began, port})
				}
				slowest = max(slowest, d)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	harness.Eventually(t, time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(committed) < 50 {
			return fmt.Errorf("acme has written %d rows", len(committed))
		}
		return nil
	})
	seqBefore := acmeSeq()
	e := &lifecycleEnv{t: t, dir: dir}
	code, out = e.cli(apiC, "move", "acme", "--to", "b")
	if code != 0 || !strings.Contains(out, "paused") {
		t.Fatalf("move acme: exit %d\n%s", code, out)
	}
	// acme keeps writing, now on b.
	mu.Lock()
	atSwitch := len(committed)
	mu.Unlock()
	harness.Eventually(t, time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acmeErrs) > 0 {
			t.Fatalf("acme's writes failed during the move: %v", acmeErrs)
		}
		if len(committed) < atSwitch+20 {
			return fmt.Errorf("acme has written %d rows since the move", len(committed)-atSwitch)
		}
		return nil
	})
	stop.Store(true)
	writers.Wait()
	if len(acmeErrs) > 0 {
		t.Fatalf("acme's writes failed during the move: %v", acmeErrs)
	}
	moved := operations(t, apiC, "acme")[0]
	var res struct {
		PauseMS  *int64    `json:"pause_ms"`
		PausedAt time.Time `json:"paused_at"`
		Verified map[string]struct {
			Rows int64 `json:"rows"`
		} `json:"verified"`
		Sequences map[string]int64 `json:"sequences"`
		Copy      struct {
			Rows int64 `json:"rows"`
		} `json:"copy"`
	}
	if err := json.Unmarshal(moved.Result, &res); err != nil || res.PauseMS == nil || res.Copy.Rows == 0 || len(res.Verified) != 4 || res.PausedAt.IsZero() {
		t.Fatalf("move result %s: %v", moved.Result, err)
	}
	// A write that began once the sidecar had accepted the pause waited
	// at the gate and then ran on b: never on a, where it would be lost.
	onB := fmt.Sprint(b.PG.Port())
	late := 0
	for _, w := range writes {
		if w.began.After(res.PausedAt) {
			late++
			if w.port != onB {
				t.Errorf("a write of acme that began %s after the pause ran on port %s, not b's %s", w.began.Sub(res.PausedAt), w.port, onB)
			}
		}
	}
	if late == 0 {
		t.Errorf("no write of acme began after the pause")
	}
	if res.Sequences["public.orders_id_seq"] < seqBefore {
		t.Errorf("orders' sequence at the target set to %d, the source had %d", res.Sequences["public.orders_id_seq"], seqBefore)
	}
	t.Logf("acme moved: pause %d ms, slowest acme transaction %s, %d rows copied; result %s", *res.PauseMS, slowest, res.Copy.Rows, moved.Result)
	// Every insert acme was told committed is at the target; nothing of
	// acme is left at the source.
	c, err := pgx.Connect(ctx, b.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var missing int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM unnest($1::text[]) item WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = 'acme' AND o.item = item)", committed).Scan(&missing); err != nil {
		t.Fatal(err)
	}
	if missing > 0 {
		t.Errorf("%d of acme's %d committed inserts are not at the target", missing, len(committed))
	}
	var dups int
	if err := c.QueryRow(ctx, "SELECT count(*) - count(DISTINCT id) FROM orders").Scan(&dups); err != nil || dups != 0 {
		t.Errorf("orders at the target: %d duplicate ids (%v)", dups, err)
	}
	if n := countRows(tenantState(t, a, "acme")); n != 0 {
		t.Errorf("%d rows of acme left at the source", n)
	}
	// globex, on a throughout, saw no error and is unchanged but for its
	// own pgbench inserts.
	select {
	case err := <-benchDone:
		if err != nil {
			t.Fatalf("globex's pgbench: %v\n%s", err, benchOut.String())
		}
	case <-ctx.Done():
		t.Fatal("pgbench did not finish")
	}
	if m := failedTx.FindStringSubmatch(benchOut.String()); strings.Contains(benchOut.String(), "aborted") || m != nil && m[1] != "0" {
		t.Fatalf("globex's pgbench:\n%s", benchOut.String())
	}
	globexAfter := tenantState(t, a, "globex")
	for _, tbl := range []string{"public.customers", "public.invoices", "public.events"} {
		if globexAfter[tbl] != globexBefore[tbl] {
			t.Errorf("globex's %s changed", tbl)
		}
	}
	if n := countRows(tenantState(t, b, "globex")); n != 0 {
		t.Errorf("%d rows of globex at the target", n)
	}
	// The audit record of the move's end carries the pause.
	var audit struct {
		Entries []struct {
			Action string         `json:"action"`
			Detail map[string]any `json:"detail"`
		} `json:"entries"`
	}
	if st := callJSON(t, apiC, e2eAdminToken, "GET", "/v1/audit?limit=1000", "", &audit); st != http.StatusOK {
		t.Fatalf("audit: %d", st)
	}
	found, pauses := false, 0
	for _, en := range audit.Entries {
		if en.Action == "operation" && en.Detail["operation"] == moved.ID && en.Detail["event"] == "end" {
			found = strings.Contains(fmt.Sprint(en.Detail["result"]), "pause_ms")
		}
		if en.Action == "pause" && en.Detail["tenant"] == "acme" {
			pauses++
		}
	}
	if !found || pauses != 2 {
		t.Errorf("audit: move end with pause_ms %t, %d pause entries of acme (want 2)", found, pauses)
	}
}
