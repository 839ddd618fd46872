package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tenantguard/tenantguard/test/harness"
)

// adminAPI calls the control plane's admin API with the demo's admin token.
func adminAPI(t *testing.T, env map[string]string, method, path, body string, out any) int {
	t.Helper()
	return callJSON(t, env["TG_ADMIN_API"], env["TG_ADMIN_TOKEN"], method, path, body, out)
}

// currentPolicy returns the control plane's policy as a generic JSON tree.
func currentPolicy(t *testing.T, env map[string]string) map[string]any {
	t.Helper()
	var p map[string]any
	if st := adminAPI(t, env, "GET", "/v1/policy", "", &p); st != http.StatusOK {
		t.Fatalf("GET /v1/policy: %d", st)
	}
	return p
}

func putPolicy(t *testing.T, env map[string]string, p map[string]any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(p)
	var out map[string]any
	st := adminAPI(t, env, "PUT", "/v1/policy", string(b), &out)
	return st, out
}

// setWrite sets tenant's allow.write in p.
func setWrite(p map[string]any, tenant string, write bool) {
	for _, tv := range p["tenants"].([]any) {
		tm := tv.(map[string]any)
		if tm["id"] == tenant {
			tm["allow"] = map[string]any{"read": true, "write": write}
		}
	}
}

// canWrite runs an INSERT in a transaction that is rolled back, and
// reports whether the policy allowed it (42501 means refused).
func canWrite(ctx context.Context, c *pgx.Conn, tenant string) (bool, error) {
	tx, err := c.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, "INSERT INTO public.orders (tenant_id, item) VALUES ($1, 'probe')", tenant)
	switch {
	case err == nil:
		return true, nil
	case pgCode(err) == "42501":
		return false, nil
	default:
		return false, err
	}
}

// TestPolicyPushes: changes through the admin API reach the running
// sidecar and ext_authz and are enforced within a second, on the
// connections already open; suspension ends a tenant's connections and
// resumes; an invalid policy is refused by the API, one the sidecar cannot
// enforce is NACKed there with the old policy kept; rollback restores
// earlier behaviour; the audit chain verifies. globex never notices.
func TestPolicyPushes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	p, env := startDemo(t)
	acme, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
	if err != nil {
		t.Fatal(err)
	}
	defer acme.Close(ctx)
	globex, err := pgx.Connect(ctx, env["TG_PG_URL_GLOBEX"])
	if err != nil {
		t.Fatal(err)
	}
	defer globex.Close(ctx)

	// globex works throughout, on one connection that must never drop.
	globexErr := make(chan error, 1)
	gctx, stopGlobex := context.WithCancel(ctx)
	go func() {
		defer close(globexErr)
		for gctx.Err() == nil {
			var n int
			if err := globex.QueryRow(gctx, "SELECT count(*)::int FROM public.orders").Scan(&n); err != nil && gctx.Err() == nil {
				globexErr <- err
				return
			}
		}
	}()
	defer func() {
		stopGlobex()
		if err := <-globexErr; err != nil {
			t.Errorf("globex's connection failed during the pushes: %v", err)
		}
	}()

	// 1. Repeated pushes: flip acme's write permission; measure until the
	// open connection's next transaction follows it.
	base := currentPolicy(t, env)
	var lat []time.Duration
	for i := range 20 {
		want := i%2 == 1 // false, true, false, …
		setWrite(base, "acme", want)
		start := time.Now()
		if st, out := putPolicy(t, env, base); st != http.StatusOK {
			t.Fatalf("PUT %d: %d %v", i, st, out)
		}
		harness.Eventually(t, 10*time.Second, func() error {
			got, err := canWrite(ctx, acme, "acme")
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("write allowed %v, want %v", got, want)
			}
			return nil
		})
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	// The latency is measured and logged (the goal is a p99 under a
	// second); the test fails only when a push is not enforced at all within
	// the generous bound above, so a loaded CI machine cannot make it flaky.
	t.Logf("push → enforced on an open connection: p50 %v, p99 %v, max %v over %d pushes", lat[len(lat)/2], p99, lat[len(lat)-1], len(lat))

	// 2. Suspend acme: its open connection ends, new logins and its tokens
	// are refused; resume restores it.
	var s struct{ SessionID, Token string }
	if st := sessionAPI(t, env, "POST", "/v1/sessions", `{"tenant_id":"acme","user_id":"alice"}`, &struct {
		SessionID *string `json:"session_id"`
		Token     *string `json:"token"`
	}{&s.SessionID, &s.Token}); st != http.StatusCreated {
		t.Fatalf("session: %d", st)
	}
	cc, err := grpc.NewClient(env["TG_EXTAUTHZ_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	authz := authv3.NewAuthorizationClient(cc)
	if st := adminAPI(t, env, "POST", "/v1/tenants/acme/suspend", "", nil); st != http.StatusOK {
		t.Fatalf("suspend: %d", st)
	}
	suspended := time.Now()
	harness.Eventually(t, 10*time.Second, func() error {
		var one int
		if err := acme.QueryRow(ctx, "SELECT 1").Scan(&one); err == nil {
			return errors.New("acme's open connection still runs queries")
		}
		return nil
	})
	harness.Eventually(t, 10*time.Second, func() error {
		if r, err := check(ctx, authz, s.Token); err != nil || r.GetOkResponse() != nil {
			return fmt.Errorf("ext_authz still allows acme's token (%v)", err)
		}
		return nil
	})
	t.Logf("suspension enforced %v after the API call", time.Since(suspended))
	if _, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"]); pgCode(err) != "28P01" {
		t.Fatalf("login while suspended: %v", err)
	}
	if st := adminAPI(t, env, "POST", "/v1/tenants/acme/resume", "", nil); st != http.StatusOK {
		t.Fatalf("resume: %d", st)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return err
		}
		acme = c
		return nil
	})
	harness.Eventually(t, 10*time.Second, func() error {
		if r, err := check(ctx, authz, s.Token); err != nil || r.GetOkResponse() == nil {
			return fmt.Errorf("ext_authz refuses acme's token after resume (%v)", err)
		}
		return nil
	})

	// 3. Invalid policies: refused by the API with the field named.
	bad := currentPolicy(t, env)
	bad["tenants"].([]any)[0].(map[string]any)["id"] = "Not Valid"
	if st, out := putPolicy(t, env, bad); st != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out), "tenants[0].id") {
		t.Fatalf("invalid policy: %d %v", st, out)
	}
	// One the API accepts but the sidecar cannot enforce: a table that is
	// not row-isolated upstream. NACKed; the old policy stays in force.
	admin, err := pgx.Connect(ctx, env["TG_PG_ADMIN_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE TABLE IF NOT EXISTS public.invoices (id int, tenant_id text)"); err != nil {
		t.Fatal(err)
	}
	before := metricValue(t, ctx, env["TG_METRICS_URL"], "tenantguard_policy_nacks_total")
	unenforceable := currentPolicy(t, env)
	setWrite(unenforceable, "acme", false)
	unenforceable["tables"] = append(unenforceable["tables"].([]any), map[string]any{"name": "public.invoices", "tenant_column": "tenant_id"})
	if st, out := putPolicy(t, env, unenforceable); st != http.StatusOK {
		t.Fatalf("PUT unenforceable: %d %v", st, out)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if n := metricValue(t, ctx, env["TG_METRICS_URL"], "tenantguard_policy_nacks_total"); n <= before {
			return fmt.Errorf("sidecar NACKs %v", n)
		}
		return nil
	})
	if ok, err := canWrite(ctx, acme, "acme"); err != nil || !ok {
		t.Fatalf("after a NACKed version acme's write should still be allowed by the old policy: %v %v", ok, err)
	}

	// 4. Rollback to the first version restores its behaviour (write allowed),
	// through a new version the sidecar can enforce.
	var rb map[string]any
	if st := adminAPI(t, env, "POST", "/v1/policy/rollback", `{"version":1}`, &rb); st != http.StatusOK {
		t.Fatalf("rollback: %d %v", st, rb)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		ok, err := canWrite(ctx, acme, "acme")
		if err != nil || !ok {
			return fmt.Errorf("after rollback: %v %v", ok, err)
		}
		return nil
	})

	// 5. The audit chain verifies; a tampered row is detected by a full
	// check, and from then on by the default, incremental one too.
	var audit struct {
		Verified     bool   `json:"verified"`
		Verification string `json:"verification"`
		Checked      int    `json:"checked"`
		VerifiedSeq  int64  `json:"verified_seq"`
		FirstBad     *int64 `json:"first_bad_seq"`
	}
	if st := adminAPI(t, env, "GET", "/v1/audit?verify=full", "", &audit); st != http.StatusOK || !audit.Verified || audit.Checked < 25 || audit.VerifiedSeq != int64(audit.Checked) {
		t.Fatalf("audit: %d %+v", st, audit)
	}
	cp, err := pgx.Connect(ctx, strings.Replace(env["TG_PG_ADMIN_URL"], "/app?", "/tenantguard?", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close(ctx)
	if _, err := cp.Exec(ctx, "UPDATE tenantguard_cp.audit SET actor = 'someone else' WHERE seq = 3"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"?verify=full", ""} {
		audit.FirstBad = nil
		if st := adminAPI(t, env, "GET", "/v1/audit"+q, "", &audit); st != http.StatusOK || audit.Verified || audit.FirstBad == nil || *audit.FirstBad != 3 {
			t.Fatalf("tampered audit, %q: %d %+v", q, st, audit)
		}
	}
	if audit.Verification != "incremental" {
		t.Fatalf("the default check: %+v", audit)
	}

	// globex's loop stops before the demo does, so the shutdown's own
	// 57P01 is not taken for an error of the pushes.
	stopGlobex()
	if err := <-globexErr; err != nil {
		t.Errorf("globex: %v", err)
	}
	globexErr = make(chan error)
	close(globexErr)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("demo exit code %d", code)
	}
}

// metricValue sums a metric's samples from a Prometheus text endpoint.
func metricValue(t *testing.T, ctx context.Context, url, name string) float64 {
	t.Helper()
	code, body, err := httpGet(ctx, url)
	if err != nil || code != 200 {
		t.Fatalf("metrics: %d %v", code, err)
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			var v float64
			f := strings.Fields(line)
			fmt.Sscan(f[len(f)-1], &v)
			sum += v
		}
	}
	return sum
}
