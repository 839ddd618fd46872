package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/internal/lifecycletest"
	"github.com/tenantguard/tenantguard/test/harness"
)

// lifecycleEnv is one application database, redis-server and control
// plane database, with control planes run as processes of the built
// binary.
type lifecycleEnv struct {
	t        *testing.T
	dir      string
	up       *lifecycletest.Upstream
	redis    string
	cpURL    string
	auditKey string
}

// controlPlane starts a control plane process on the shared store and
// waits until it is ready; it returns the process and its admin API URL.
func (e *lifecycleEnv) controlPlane(name string) (*process, string, string) {
	t := e.t
	xdsAddr, admin := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(e.dir, name+".yaml")
	body := fmt.Sprintf(`listen: {xds: %q, admin: %q}
database: %q
admin_token: %s
xds_token: %s
seed: policy.yaml
audit_key_file: audit.key
audit_signed_from: 1
lifecycle:
  archive_dir: archives
  lease: 2s
  ready_timeout: 30s
  postgres: {url: %q, binding_key: %q}
  redis: {upstream: %q}
`, xdsAddr, admin, e.cpURL, e2eAdminToken, xdsToken, e.up.AppURL, lifecycletest.BindingKey, e.redis)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := start(t, "controlplane", "--config", cfg)
	harness.Eventually(t, 60*time.Second, func() error {
		if err := cp.exited(); err != nil {
			t.Fatalf("controlplane %s exited: %v\n%s", name, err, cp.output())
		}
		code, _, err := httpGet(context.Background(), "http://"+admin+"/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("readyz %d %v", code, err)
		}
		return nil
	})
	return cp, "http://" + admin, xdsAddr
}

// cli runs `tenantguard tenant args…` against api and returns its exit
// code and output.
func (e *lifecycleEnv) cli(api string, args ...string) (int, string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"tenant"}, args...)...)
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), "TG_ADMIN_API="+api, "TG_ADMIN_TOKEN="+e2eAdminToken, "USER=e2e")
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		e.t.Fatalf("tenant %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// startCLI starts `tenantguard tenant args…` against api; wait returns
// its exit code and output once it has ended.
func (e *lifecycleEnv) startCLI(api string, args ...string) (wait func() (int, string)) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	e.t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, binary, append([]string{"tenant"}, args...)...)
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), "TG_ADMIN_API="+api, "TG_ADMIN_TOKEN="+e2eAdminToken, "USER=e2e")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("tenant %v: %v", args, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cmd.Wait()
	}()
	return func() (int, string) {
		<-done
		return cmd.ProcessState.ExitCode(), out.String()
	}
}

// operations lists tenant's operations, newest first.
func operations(t *testing.T, api, tenant string) []adminapi.OperationView {
	t.Helper()
	var list struct {
		Operations []adminapi.OperationView `json:"operations"`
	}
	if st := callJSON(t, api, e2eAdminToken, "GET", "/v1/operations?tenant="+tenant, "", &list); st != http.StatusOK {
		t.Fatalf("GET operations of %s: %d", tenant, st)
	}
	return list.Operations
}

func getOperation(t *testing.T, api, id string) adminapi.OperationView {
	t.Helper()
	var op adminapi.OperationView
	if st := callJSON(t, api, e2eAdminToken, "GET", "/v1/operations/"+id, "", &op); st != http.StatusOK {
		t.Fatalf("GET operation %s: %d", id, st)
	}
	return op
}

func policyTenants(t *testing.T, api string) []string {
	t.Helper()
	var p struct {
		Tenants []struct {
			ID string `json:"id"`
		} `json:"tenants"`
	}
	if st := callJSON(t, api, e2eAdminToken, "GET", "/v1/policy", "", &p); st != http.StatusOK {
		t.Fatalf("GET policy: %d", st)
	}
	var out []string
	for _, tn := range p.Tenants {
		out = append(out, tn.ID)
	}
	return out
}

// TestTenantLifecycle runs the lifecycle through the CLI and the admin
// API of control planes run as processes, with a sidecar that must
// accept every change: provision (waiting for the sidecar's ACK, and one
// rolled back by its compensation), export, import into a new id (and a
// tampered archive refused), and an offboarding whose control plane is
// killed with SIGKILL in the middle of deleting and which another control
// plane finishes. globex, the canary, is byte for byte unchanged
// throughout.
func TestTenantLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes")
	}
	pg := harness.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	suffix := fmt.Sprint(time.Now().UnixNano())
	e := &lifecycleEnv{t: t, dir: t.TempDir()}
	e.up = lifecycletest.Setup(t, pg, "lc_e2e_app_"+suffix)
	rdb := harness.FreshRedis(t)
	e.redis = rdb.Options().Addr
	cpDB := "lc_e2e_cp_" + suffix
	if err := pg.CreateDatabase(ctx, cpDB); err != nil {
		t.Fatal(err)
	}
	e.cpURL = pg.AdminURL(cpDB)
	if err := os.WriteFile(filepath.Join(e.dir, "policy.yaml"), []byte(lifecycletest.PolicyYAML("acme", "globex")), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := auditkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "audit.key"), key.MarshalPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	e.up.SeedRows(t, "acme", 40)
	e.up.SeedRows(t, "globex", 25)
	lifecycletest.SeedKeys(t, rdb, "acme", 50)
	lifecycletest.SeedKeys(t, rdb, "globex", 20)

	cpA, apiA, xdsA := e.controlPlane("cp-a")
	_ = cpA
	// A sidecar takes its policy from A: provisioning waits for it.
	listen, scAdmin := freeAddr(t), freeAddr(t)
	scCfg := filepath.Join(e.dir, "sidecar.yaml")
	if err := os.WriteFile(scCfg, []byte(fmt.Sprintf(`listen: {postgres: %q, admin: %q}
postgres:
  databases:
    - name: app
      url: %q
isolation:
  binding_key: %q
  tables:
    - {name: public.invoices, tenant_column: tenant_id}
    - {name: public.events, tenant_column: tenant_id}
    - {name: public.customers, tenant_column: tenant_id}
    - {name: public.plans, shared: true}
controlplane:
  address: %q
  node_id: lifecycle-sidecar
  cache_file: sidecar-policy.json
  token: %s
drain_timeout: 2s
`, listen, scAdmin, e.up.AppURL, lifecycletest.BindingKey, xdsA, xdsToken)), 0o600); err != nil {
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
	asTenant := func(tenant string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/app?sslmode=disable", tenant, lifecycletest.Password(tenant), listen))
	}
	canary := lifecycletest.Take(t, e.up, rdb).Without("acme")

	// 1. provision initech with seed rows and keys, through the CLI; it
	// can log in through the sidecar at once and sees its rows.
	if err := os.WriteFile(filepath.Join(e.dir, "initech.pw"), []byte(lifecycletest.Password("initech")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seed := `{"rows": {"public.customers": [{"id": 1, "name": "Peter"}, {"id": 2, "name": "Milton"}],
	          "public.invoices": [{"id": 1, "customer_id": 2, "total": 12.5}]}, "keys": {"stapler": "red"}}`
	if err := os.WriteFile(filepath.Join(e.dir, "seed.json"), []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	// The sidecar is stopped (SIGSTOP) meanwhile: its xDS stream stays
	// open but it cannot ACK, so the operation must wait in wait_ready and
	// end only once the sidecar runs again and has accepted the tenant.
	if err := sc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = sc.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	waitCLI := e.startCLI(apiA, "provision", "initech", "--password-file", "initech.pw", "--seed", "seed.json", "--limits", `{"max_connections": 5}`)
	harness.Eventually(t, time.Minute, func() error {
		ops := operations(t, apiA, "initech")
		if len(ops) == 0 {
			return fmt.Errorf("no operation yet")
		}
		if ops[0].State != "running" {
			t.Fatalf("provisioning ended while the sidecar could not ACK: %+v", ops[0])
		}
		for _, s := range ops[0].Steps {
			if s.Name == "wait_ready" && s.Status == "running" && strings.Contains(s.Message, "lifecycle-sidecar") {
				return nil
			}
		}
		return fmt.Errorf("not waiting for the sidecar yet: step %d", ops[0].Step)
	})
	if err := sc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	code, out := waitCLI()
	if code != 0 {
		t.Fatalf("provision: exit %d\n%s", code, out)
	}
	// The sidecar has the policy version that added initech the moment
	// the command returns: no polling.
	prov := operations(t, apiA, "initech")[0]
	var provRes struct {
		PolicyVersion int64 `json:"policy_version"`
		Ready         int   `json:"data_planes_ready"`
	}
	if err := json.Unmarshal(prov.Result, &provRes); err != nil || provRes.PolicyVersion == 0 || provRes.Ready != 1 {
		t.Fatalf("provision result %s: %v", prov.Result, err)
	}
	if _, metrics, err := httpGet(ctx, "http://"+scAdmin+"/metrics"); err != nil ||
		!strings.Contains(metrics, fmt.Sprintf(`tenantguard_policy_version_info{version="%d"} 1`, provRes.PolicyVersion)) {
		t.Fatalf("the sidecar is not at policy version %d when provisioning ends (%v)", provRes.PolicyVersion, err)
	}
	// Not a terminal: plain lines, one per change, naming the steps.
	for _, want := range []string{"provision initech", "seed_rows", "wait_ready", "100% succeeded"} {
		if !strings.Contains(out, want) {
			t.Errorf("provision output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\r") {
		t.Errorf("progress bar drawn on a pipe:\n%q", out)
	}
	c, err := asTenant("initech")
	if err != nil {
		t.Fatalf("initech through the sidecar: %v\n%s", err, out)
	}
	var customers, allCustomers int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM public.customers WHERE name IN ('Peter', 'Milton')").Scan(&customers); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "SELECT count(*) FROM public.customers").Scan(&allCustomers); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	if customers != 2 || allCustomers != 2 {
		t.Errorf("initech sees %d of its seeded customers, %d in all", customers, allCustomers)
	}

	// 2. A provision whose seed the database refuses (an invoice of a
	// customer that does not exist, after the customers were committed):
	// its compensation removes the customers; hooli never enters the
	// policy.
	if err := os.WriteFile(filepath.Join(e.dir, "bad.json"), []byte(`{"rows": {"public.customers": [{"id": 1, "name": "Gavin"}],
	   "public.invoices": [{"id": 1, "customer_id": 7, "total": 1}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = e.cli(apiA, "provision", "hooli", "--password-file", "initech.pw", "--seed", "bad.json")
	if code != 1 || !strings.Contains(out, "failed") || !strings.Contains(out, "23503") {
		t.Fatalf("bad provision: exit %d\n%s", code, out)
	}
	if got := e.up.Counts(t, "hooli"); got["public.customers"] != 0 {
		t.Errorf("hooli's customers were not removed: %v", got)
	}
	if got := policyTenants(t, apiA); strings.Contains(fmt.Sprint(got), "hooli") {
		t.Errorf("hooli in the policy: %v", got)
	}

	// 3. Export acme through the CLI: the archive has acme's data and
	// nothing of globex.
	code, out = e.cli(apiA, "export", "acme", "-o", "acme.tar")
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	archive, err := os.ReadFile(filepath.Join(e.dir, "acme.tar"))
	if err != nil {
		t.Fatal(err)
	}
	checkArchive(t, archive, "acme", e.up.Counts(t, "acme"), 65, 10)
	// The tenant column is written as the archive's tenant whatever the
	// row held: look for the canary's values themselves.
	if bytes.Contains(archive, []byte("globex")) {
		t.Errorf("globex's data in acme's archive")
	}

	// 3b. An archive changed after it was written (one byte of a row,
	// the tar still well formed) is refused by its checksums: nothing of
	// it lands.
	tampered := bytes.Replace(archive, []byte("acme customer 1 "), []byte("acme customer 9 "), 1)
	if bytes.Equal(tampered, archive) {
		t.Fatal("nothing to tamper with in the archive")
	}
	if err := os.WriteFile(filepath.Join(e.dir, "tampered.tar"), tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	// An import goes into a tenant of the policy without data:
	// provision acme2 (no seed) first.
	if err := os.WriteFile(filepath.Join(e.dir, "acme2.pw"), []byte(lifecycletest.Password("acme2")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Through another control plane, C, on the same store: the sidecar is
	// connected to A only, and C's provisioning still waits for it (the
	// instances share their data planes' status through the store).
	_, apiC, _ := e.controlPlane("cp-c")
	if code, out = e.cli(apiC, "provision", "acme2", "--password-file", "acme2.pw"); code != 0 {
		t.Fatalf("provision acme2: exit %d\n%s", code, out)
	}
	if err := json.Unmarshal(operations(t, apiC, "acme2")[0].Result, &provRes); err != nil || provRes.Ready != 1 {
		t.Fatalf("provision of acme2 through control plane C (the sidecar on A): result %s, %v; want data_planes_ready 1",
			operations(t, apiC, "acme2")[0].Result, err)
	}
	if _, metrics, err := httpGet(ctx, "http://"+scAdmin+"/metrics"); err != nil ||
		!strings.Contains(metrics, fmt.Sprintf(`tenantguard_policy_version_info{version="%d"} 1`, provRes.PolicyVersion)) {
		t.Fatalf("the sidecar on A is not at policy version %d when C's provisioning ends (%v)", provRes.PolicyVersion, err)
	}
	empty := e.up.Counts(t, "acme2")
	code, out = e.cli(apiA, "import", "acme2", "--archive", "tampered.tar")
	if code != 1 || !strings.Contains(out, "bad archive") || !strings.Contains(out, "checksum") {
		t.Fatalf("tampered import: exit %d\n%s", code, out)
	}
	if got := e.up.Counts(t, "acme2"); fmt.Sprint(got) != fmt.Sprint(empty) {
		t.Errorf("rows of a refused archive landed: %v", got)
	}
	// Not into a tenant the policy does not have.
	code, out = e.cli(apiA, "import", "acme3", "--archive", "acme.tar")
	if code != 1 || !strings.Contains(out, "not in the policy") {
		t.Fatalf("import into a tenant not in the policy: exit %d\n%s", code, out)
	}

	// 4. Import it into the new id, uploading the file.
	code, out = e.cli(apiA, "import", "acme2", "--archive", "acme.tar")
	if code != 0 {
		t.Fatalf("import: exit %d\n%s", code, out)
	}
	if got, want := e.up.Counts(t, "acme2"), e.up.Counts(t, "acme"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("acme2 has %v, acme %v", got, want)
	}
	// acme2 reads its imported rows through the sidecar, and only those.
	c2, err := asTenant("acme2")
	if err != nil {
		t.Fatalf("acme2 through the sidecar: %v", err)
	}
	var acme2Customers int64
	if err := c2.QueryRow(ctx, "SELECT count(*) FROM public.customers").Scan(&acme2Customers); err != nil {
		t.Fatal(err)
	}
	c2.Close(ctx)
	if want := e.up.Counts(t, "acme")["public.customers"]; acme2Customers != want {
		t.Errorf("acme2 sees %d customers through the sidecar, want %d", acme2Customers, want)
	}
	if err := canary.Equal(lifecycletest.Take(t, e.up, rdb).Without("acme", "acme2", "initech")); err != nil {
		t.Fatalf("canary after provision, export, import: %v", err)
	}

	// 5. Offboard acme on control plane B, slowly, and kill B with
	// SIGKILL in the middle of deleting its rows; another control plane
	// (C, or A) takes it over once B's lease has expired and finishes it.
	before := lifecycletest.Take(t, e.up, rdb)
	acmeRows := e.up.Counts(t, "acme")
	cpB, apiB, _ := e.controlPlane("cp-b")
	// Connections open through the sidecar before the offboarding:
	// acme's is ended by it, globex's goes on.
	acmeConn, err := asTenant("acme")
	if err != nil {
		t.Fatalf("acme through the sidecar: %v", err)
	}
	defer acmeConn.Close(ctx)
	globexConn, err := asTenant("globex")
	if err != nil {
		t.Fatalf("globex through the sidecar: %v", err)
	}
	defer globexConn.Close(ctx)
	var op adminapi.OperationView
	if st := callJSON(t, apiB, e2eAdminToken, "POST", "/v1/tenants/acme/offboard", `{"batch_size": 5, "batch_pause": "100ms"}`, &op); st != http.StatusAccepted {
		t.Fatalf("offboard: %d %+v", st, op)
	}
	harness.Eventually(t, 2*time.Minute, func() error {
		cur := getOperation(t, apiB, op.ID)
		for _, s := range cur.Steps {
			if s.Name == "delete_rows" && s.Status == "running" && s.Done > 0 {
				return nil
			}
		}
		if cur.State != "running" {
			t.Fatalf("offboarding ended before the kill: %+v", cur)
		}
		return fmt.Errorf("not deleting yet: step %d", cur.Step)
	})
	if err := cpB.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cpB.wait(t, 10*time.Second)
	if mid := getOperation(t, apiC, op.ID); mid.State != "running" {
		t.Fatalf("after the kill: %+v", mid)
	}
	if got := e.up.Counts(t, "acme"); fmt.Sprint(got) == fmt.Sprint(acmeRows) {
		t.Errorf("nothing deleted before the kill: %v", got)
	}
	var done adminapi.OperationView
	harness.Eventually(t, 2*time.Minute, func() error {
		done = getOperation(t, apiC, op.ID)
		if done.State == "running" {
			return fmt.Errorf("still running, step %d, lease %s", done.Step, done.LeaseOwner)
		}
		return nil
	})
	// Claimed by B, then by A or C (a loaded machine may pass it on once
	// more: a lease not renewed in time is taken over too).
	if done.State != "succeeded" || done.Claims < 2 {
		t.Fatalf("offboarding after the takeover: %+v", done)
	}
	var res struct {
		Deleted struct {
			Rows map[string]int64 `json:"rows"`
			Keys int64            `json:"keys"`
		} `json:"deleted"`
	}
	if err := json.Unmarshal(done.Result, &res); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Deleted.Rows) != fmt.Sprint(acmeRows) || res.Deleted.Keys != int64(50+10+5) {
		t.Errorf("deleted %+v, acme had %v rows and %d keys", res.Deleted, acmeRows, 65)
	}
	after := lifecycletest.Take(t, e.up, rdb)
	if after["acme"] != "" {
		t.Errorf("acme's data remains: %s", after["acme"])
	}
	if err := before.Without("acme").Equal(after); err != nil {
		t.Fatalf("offboarding acme changed another tenant: %v", err)
	}
	if err := canary.Equal(after.Without("acme2", "initech")); err != nil {
		t.Fatalf("canary (globex) changed: %v", err)
	}
	if got := policyTenants(t, apiA); fmt.Sprint(got) != "[globex initech acme2]" {
		t.Errorf("tenants: %v", got)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if _, err := acmeConn.Exec(ctx, "SELECT 1"); err == nil {
			return fmt.Errorf("acme's connection still runs queries")
		}
		return nil
	})
	var globexCustomers int64
	if err := globexConn.QueryRow(ctx, "SELECT count(*) FROM public.customers").Scan(&globexCustomers); err != nil || globexCustomers != 25 {
		t.Fatalf("globex's open connection after acme's offboarding: %d customers, %v", globexCustomers, err)
	}
	// acme can no longer log in at the sidecar; globex still can.
	harness.Eventually(t, 30*time.Second, func() error {
		if c, err := asTenant("acme"); err == nil {
			c.Close(ctx)
			return fmt.Errorf("acme still logs in")
		}
		return nil
	})
	g, err := asTenant("globex")
	if err != nil {
		t.Fatalf("globex after acme's offboarding: %v", err)
	}
	g.Close(ctx)

	// The audit chain holds each operation's start and end, and verifies.
	var audit struct {
		Entries []struct {
			Action string         `json:"action"`
			Detail map[string]any `json:"detail"`
		} `json:"entries"`
		Verified bool   `json:"verified"`
		Problem  string `json:"problem"`
	}
	if st := callJSON(t, apiC, e2eAdminToken, "GET", "/v1/audit?verify=full&limit=1000", "", &audit); st != http.StatusOK || !audit.Verified {
		t.Fatalf("audit: %d verified %v %s", st, audit.Verified, audit.Problem)
	}
	events := map[string]int{}
	var endDetail map[string]any
	for _, a := range audit.Entries {
		if a.Action == "operation" {
			events[fmt.Sprint(a.Detail["kind"], " ", a.Detail["event"])]++
			if a.Detail["operation"] == op.ID && a.Detail["event"] == "end" {
				endDetail = a.Detail
			}
		}
	}
	// Three provisions (initech, hooli, acme2), two imports (acme3's
	// refused, acme2's; the tampered upload never became an operation).
	if events["provision start"] != 3 || events["provision end"] != 3 || events["offboard end"] != 1 || events["export end"] != 1 || events["import end"] != 2 {
		t.Errorf("operation audit entries: %v", events)
	}
	if !strings.Contains(fmt.Sprint(endDetail["result"]), "public.customers:40") {
		t.Errorf("offboarding's audit record: %v", endDetail)
	}
}

// checkArchive reads an export's tar as an outsider would: the manifest
// first, then each file, whose line count and SHA-256 must be what the
// manifest says; each table's rows are rows[table], every one of them
// tenant's; the keys are the keys lifecycletest.SeedKeys stored, n of
// them, in the tenant's own names (its namespace taken off), withTTL of
// them keeping their time to live.
func checkArchive(t *testing.T, archive []byte, tenant string, rows map[string]int64, n, withTTL int64) {
	t.Helper()
	var m struct {
		Tenant string `json:"tenant"`
		Tables []struct {
			Name         string `json:"name"`
			TenantColumn string `json:"tenant_column"`
			File         string `json:"file"`
			Rows         int64  `json:"rows"`
			SHA256       string `json:"sha256"`
		} `json:"tables"`
		Redis struct {
			File   string `json:"file"`
			Keys   int64  `json:"keys"`
			SHA256 string `json:"sha256"`
		} `json:"redis"`
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("archive: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if hdr.Name != "manifest.json" {
				t.Fatalf("first entry %q", hdr.Name)
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("manifest: %v", err)
			}
			continue
		}
		files[hdr.Name] = b
	}
	lines := func(b []byte) [][]byte { return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) }
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	if m.Tenant != tenant {
		t.Errorf("manifest's tenant %q", m.Tenant)
	}
	got := map[string]int64{}
	for _, tbl := range m.Tables {
		b, ok := files[tbl.File]
		if !ok {
			t.Errorf("table %s: no file %s", tbl.Name, tbl.File)
			continue
		}
		if s := sum(b); s != tbl.SHA256 {
			t.Errorf("table %s: sha256 %s, the manifest says %s", tbl.Name, s, tbl.SHA256)
		}
		ls := lines(b)
		if len(b) == 0 {
			ls = nil
		}
		for _, l := range ls {
			var row map[string]any
			if err := json.Unmarshal(l, &row); err != nil {
				t.Fatalf("table %s: %v: %s", tbl.Name, err, l)
			}
			if row[tbl.TenantColumn] != tenant {
				t.Fatalf("table %s: a row of another tenant: %s", tbl.Name, l)
			}
		}
		if int64(len(ls)) != tbl.Rows {
			t.Errorf("table %s: %d lines, the manifest says %d", tbl.Name, len(ls), tbl.Rows)
		}
		got[tbl.Name] = tbl.Rows
	}
	if fmt.Sprint(got) != fmt.Sprint(rows) {
		t.Errorf("archive's rows %v, the tenant has %v", got, rows)
	}
	b := files[m.Redis.File]
	if s := sum(b); s != m.Redis.SHA256 {
		t.Errorf("keys: sha256 %s, the manifest says %s", s, m.Redis.SHA256)
	}
	ttl := 0
	ls := lines(b)
	for _, l := range ls {
		var k struct {
			Key  []byte `json:"key"`
			PTTL int64  `json:"pttl"`
			Dump []byte `json:"dump"`
		}
		if err := json.Unmarshal(l, &k); err != nil {
			t.Fatalf("keys: %v: %s", err, l)
		}
		name := string(k.Key)
		switch {
		case strings.HasPrefix(name, "str:") && k.PTTL <= 0, strings.HasPrefix(name, "ttl:") && k.PTTL > 0,
			name == "list", name == "hash", name == "zset", name == "set", name == "bin\x00\xff":
		default:
			t.Errorf("key %q (pttl %d) is none of the tenant's", name, k.PTTL)
		}
		if k.PTTL > 0 {
			ttl++
		}
		if len(k.Dump) == 0 {
			t.Errorf("key %q: no DUMP payload", name)
		}
	}
	if int64(len(ls)) != n || m.Redis.Keys != n || int64(ttl) != withTTL {
		t.Errorf("keys: %d lines (%d with a TTL), the manifest says %d, the tenant has %d", len(ls), ttl, m.Redis.Keys, n)
	}
}
