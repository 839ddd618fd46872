package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

const (
	soakAdminToken = "soak-admin-token-0123456789"
	soakXDSToken   = "soak-xds-token-0123456789"
)

// soakStack is the control plane, ext_authz and the sidecar, each a
// process of its own, over the harness's PostgreSQL and redis-server.
type soakStack struct {
	sidecar       *harness.Sidecar
	listen, redis string // the sidecar's listeners
	adminAPI      string // the control plane's admin API
	sessionAPI    string // ext_authz's session API
}

func startSoakStack(t *testing.T) *soakStack {
	t.Helper()
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	rd := harness.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The soak's transactions look their row up: over hours the ledger
	// grows, and without an index each would scan all of it.
	if err := pg.Exec(ctx, appDB, "CREATE INDEX IF NOT EXISTS ledger_client_seq ON ledger (client, seq)"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "postgres", "CREATE DATABASE soak_cp"); err != nil && !strings.Contains(err.Error(), "42P04") {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "soak_cp", "DROP SCHEMA IF EXISTS tenantguard_cp CASCADE"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Token keys.
	kg := harness.StartProcess(t, tgBinary, "extauthz", "keygen", "--id", "soak", "--dir", dir)
	if code := kg.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("keygen: %s", kg.Output())
	}
	signing := regexp.MustCompile(`signing key:\s+(\S+)`).FindStringSubmatch(kg.Output())
	verify := regexp.MustCompile(`verification key:\s+(\S+)`).FindStringSubmatch(kg.Output())
	if signing == nil || verify == nil {
		t.Fatalf("keygen output: %s", kg.Output())
	}

	// The control plane, seeded with acme and globex.
	seed := write("policy.yaml", fmt.Sprintf("name: default\ntenants:\n  - id: acme\n    credentials: [%q]\n  - id: globex\n    credentials: [%q]\n", acmePass, globexPass))
	xds, cpAdmin := harness.FreeAddr(t), harness.FreeAddr(t)
	cpCfg := write("controlplane.yaml", fmt.Sprintf("listen:\n  xds: %q\n  admin: %q\ndatabase: %q\nadmin_token: %s\nxds_token: %s\nseed: %q\n",
		xds, cpAdmin, pg.AdminURL("soak_cp"), soakAdminToken, soakXDSToken, seed))
	cp := harness.StartProcess(t, tgBinary, "controlplane", "--config", cpCfg, "--log-level", "warn")
	harness.Eventually(t, 60*time.Second, func() error {
		if err := cp.Exited(); err != nil {
			t.Fatalf("control plane %v:\n%s", err, cp.Output())
		}
		code, _, err := httpCall(http.MethodGet, "http://"+cpAdmin+"/readyz", "", "")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("control plane readyz %d %v", code, err)
		}
		return nil
	})

	// ext_authz, issuing the session tokens the sidecar accepts.
	store := "redis://" + rd.Addr() + "/1"
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	azCfg := write("extauthz.yaml", fmt.Sprintf("listen:\n  grpc: %q\n  http: %q\nadmin_token: %s\nsessions:\n  store: %q\n  signing_key: %q\n  ttl: 15m\n  max_age: 12h\n"+
		"controlplane:\n  address: %q\n  node_id: soak-extauthz\n  cache_file: %q\n  token: %s\n",
		grpcAddr, httpAddr, soakAdminToken, store, signing[1], xds, filepath.Join(dir, "extauthz-policy.json"), soakXDSToken))
	az := harness.StartProcess(t, tgBinary, "extauthz", "--config", azCfg, "--log-level", "warn")
	st := &soakStack{adminAPI: "http://" + cpAdmin, sessionAPI: "http://" + httpAddr}
	harness.Eventually(t, 60*time.Second, func() error {
		if err := az.Exited(); err != nil {
			t.Fatalf("ext_authz %v:\n%s", err, az.Output())
		}
		_, err := st.newSession("acme")
		return err
	})

	// The sidecar, its policy from the control plane.
	listen, redisListen, admin := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	scCfg := fmt.Sprintf(`listen:
  postgres: %q
  redis: %q
  admin: %q
postgres:
  databases:
    - name: %s
      url: "postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable"
redis:
  upstream: %q
sessions:
  store: %q
  verification_keys: [%q]
  end_mode: immediate
controlplane:
  address: %q
  node_id: soak-sidecar
  cache_file: %q
  token: %s
`, listen, redisListen, admin, appDB, appRole, appPass, pg.Port(), appDB, rd.Addr(), store, verify[1], xds,
		filepath.Join(dir, "sidecar-policy.json"), soakXDSToken)
	st.sidecar = harness.StartSidecar(t, tgBinary, admin, scCfg, harness.SidecarOptions{LogLevel: "warn"})
	st.listen, st.redis = listen, redisListen
	return st
}

func httpCall(method, url, token, body string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

type session struct {
	ID    string `json:"session_id"`
	Token string `json:"token"`
}

func (st *soakStack) newSession(tenant string) (session, error) {
	var s session
	code, b, err := httpCall(http.MethodPost, st.sessionAPI+"/v1/sessions", soakAdminToken, fmt.Sprintf(`{"tenant_id":%q,"user_id":"soak"}`, tenant))
	if err != nil {
		return s, err
	}
	if code != http.StatusCreated {
		return s, fmt.Errorf("create session: %d %s", code, b)
	}
	return s, json.Unmarshal(b, &s)
}

func (st *soakStack) revoke(s session) error {
	code, b, err := httpCall(http.MethodDelete, st.sessionAPI+"/v1/sessions/"+s.ID, soakAdminToken, "")
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("revoke: %d %s", code, b)
	}
	return nil
}

// setChurnTenant adds (or removes) tenant "churn" in the control plane's
// policy and pushes it.
func (st *soakStack) setChurnTenant(present bool) error {
	code, b, err := httpCall(http.MethodGet, st.adminAPI+"/v1/policy", soakAdminToken, "")
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("GET policy: %d %v %s", code, err, b)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var tenants []any
	for _, tv := range p["tenants"].([]any) {
		if tv.(map[string]any)["id"] != "churn" {
			tenants = append(tenants, tv)
		}
	}
	if present {
		tenants = append(tenants, map[string]any{"id": "churn", "credentials": []string{"churn-secret-1"}})
	}
	p["tenants"] = tenants
	body, _ := json.Marshal(p)
	code, b, err = httpCall(http.MethodPut, st.adminAPI+"/v1/policy?hash_credentials=true", soakAdminToken, string(body))
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("PUT policy: %d %v %s", code, err, b)
	}
	return nil
}

// soakSample is one sample of the sidecar.
type soakSample struct {
	at         time.Duration
	rssKiB     int64
	goroutines float64
	fds        int
}

// soakCounts are the operations the soak ran, and what went wrong.
type soakCounts struct {
	pgTx, redisOps, pubsub, pushes, revocations, connects atomic.Int64
	mu                                                    sync.Mutex
	failures                                              []string
}

func (c *soakCounts) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.failures) < 50 {
		c.failures = append(c.failures, fmt.Sprintf(format, args...))
	}
}

// TestSoak churns the sidecar for TG_SOAK_DURATION (30s in make test; 10m
// by `make soak`; hours if asked): Postgres clients connecting, running a
// transaction whose reply is checked, disconnecting; Redis clients doing
// the same with SET/GET; pub/sub subscribe, publish, receive,
// unsubscribe; a policy pushed through the control plane over xDS every
// 3s (a tenant added, then removed, each time checked at the sidecar);
// a session token issued, used on both protocols and revoked every 2s
// (the connections opened with it end). The sidecar's RSS, goroutines
// and descriptors, sampled throughout, must be flat (within 10%) after
// the warm-up (the first third), and every reply correct.
func TestSoak(t *testing.T) {
	d := 30 * time.Second
	if v := os.Getenv("TG_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("TG_SOAK_DURATION: %v", err)
		}
	}
	st := startSoakStack(t)
	// running says when to stop starting work. The operations' own
	// context is not cut at the end: one under way then completes and is
	// checked (cut by a deadline it would fail, and be taken for the
	// sidecar's failure); it is cancelled only if the clients hang.
	running, stopRunning := context.WithTimeout(context.Background(), d)
	defer stopRunning()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var counts soakCounts
	var wg sync.WaitGroup
	run := func(n int, f func(ctx context.Context, id int)) {
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for running.Err() == nil {
					f(ctx, i)
				}
			}()
		}
	}
	live := func(err error) bool { return err != nil } // see running
	// globex listens, all along, on the channels acme publishes on: it
	// must hear none of acme's messages, only its own marker at the end.
	eavesdropper := redisClient(st.redis, "globex", 1)
	defer eavesdropper.Close()
	var soakChannels []string
	for j := range 10 {
		soakChannels = append(soakChannels, fmt.Sprintf("soak-ch-%d", j))
	}
	eavesdrop := eavesdropper.Subscribe(context.Background(), soakChannels...)
	defer eavesdrop.Close()
	for range soakChannels {
		if _, err := eavesdrop.Receive(context.Background()); err != nil {
			t.Fatalf("globex subscribe: %v", err)
		}
	}
	seq := atomic.Int64{}
	run(3, func(ctx context.Context, id int) { // Postgres churn
		c, err := pgx.Connect(ctx, tenantURL(st.listen, "acme"))
		if err != nil {
			if live(err) {
				counts.fail("pg connect: %v", err)
			}
			return
		}
		counts.connects.Add(1)
		defer c.Close(context.Background())
		for range 5 {
			n := int(seq.Add(1))
			note := fmt.Sprintf("soak-%d", n)
			var got string
			err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "INSERT INTO ledger (client, seq, note) VALUES ($1, $2, $3)", 1000+id, n, note); err != nil {
					return err
				}
				return tx.QueryRow(ctx, "SELECT note FROM ledger WHERE client = $1 AND seq = $2", 1000+id, n).Scan(&got)
			})
			if live(err) {
				counts.fail("pg transaction: %v", err)
				return
			}
			if err == nil && got != note {
				counts.fail("pg reply %q, want %q", got, note)
			}
			counts.pgTx.Add(1)
		}
	})
	run(2, func(ctx context.Context, id int) { // Redis churn
		c := redisClient(st.redis, "globex", 1)
		defer c.Close()
		counts.connects.Add(1)
		for j := range 20 {
			key := fmt.Sprintf("soak:%d:%d", id, j)
			if err := c.Set(ctx, key, "v="+key, 0).Err(); live(err) {
				counts.fail("redis SET: %v", err)
				return
			}
			got, err := c.Get(ctx, key).Result()
			if live(err) {
				counts.fail("redis GET: %v", err)
				return
			}
			if err == nil && got != "v="+key {
				counts.fail("redis GET %s answered %q", key, got)
			}
			counts.redisOps.Add(2)
		}
	})
	run(1, func(ctx context.Context, id int) { // pub/sub
		sub := redisClient(st.redis, "acme", 1)
		defer sub.Close()
		pub := redisClient(st.redis, "acme", 1)
		defer pub.Close()
		for j := 0; j < 10 && running.Err() == nil; j++ {
			ch := fmt.Sprintf("soak-ch-%d", j)
			ps := sub.Subscribe(ctx, ch)
			if _, err := ps.Receive(ctx); live(err) {
				counts.fail("subscribe: %v", err)
				ps.Close()
				return
			}
			msg := fmt.Sprintf("m-%d", seq.Add(1))
			if err := pub.Publish(ctx, ch, msg).Err(); live(err) {
				counts.fail("publish: %v", err)
			}
			m, err := ps.ReceiveMessage(ctx)
			if live(err) {
				counts.fail("receive: %v", err)
			} else if err == nil && (m.Channel != ch || m.Payload != msg) {
				counts.fail("pub/sub delivered %s/%s, want %s/%s", m.Channel, m.Payload, ch, msg)
			}
			if err := ps.Unsubscribe(ctx, ch); live(err) {
				counts.fail("unsubscribe: %v", err)
			}
			ps.Close()
			counts.pubsub.Add(1)
		}
	})
	run(1, func(ctx context.Context, _ int) { // policy pushes over xDS
		present := counts.pushes.Load()%2 == 0
		if err := st.setChurnTenant(present); live(err) {
			counts.fail("policy push: %v", err)
			return
		}
		counts.pushes.Add(1)
		url := strings.Replace(tenantURL(st.listen, "acme"), "acme:"+acmePass, "churn:churn-secret-1", 1)
		deadline := time.Now().Add(15 * time.Second)
		for running.Err() == nil {
			c, err := pgx.Connect(ctx, url)
			if err == nil {
				c.Close(context.Background())
			}
			if (err == nil) == present {
				break
			}
			if time.Now().After(deadline) {
				counts.fail("policy push (churn present=%v) not in force at the sidecar after 15s: %v", present, err)
				break
			}
			time.Sleep(50 * time.Millisecond) // polling with a deadline
		}
		sleepCtx(running, 3*time.Second)
	})
	run(1, func(ctx context.Context, _ int) { // token revocations
		s, err := st.newSession("acme")
		if live(err) {
			counts.fail("new session: %v", err)
			return
		} else if err != nil {
			return
		}
		pgc, err := pgx.Connect(ctx, strings.Replace(tenantURL(st.listen, "acme"), acmePass, s.Token, 1))
		if live(err) {
			counts.fail("pg with a token: %v", err)
			return
		} else if err != nil {
			return
		}
		defer pgc.Close(context.Background())
		rc := goredis.NewClient(&goredis.Options{Addr: st.redis, Username: "acme", Password: s.Token, Protocol: 2,
			DisableIdentity: true, MaxRetries: -1, PoolSize: 1})
		defer rc.Close()
		if err := rc.Set(ctx, "token-key", "v", 0).Err(); live(err) {
			counts.fail("redis with a token: %v", err)
			return
		}
		if err := st.revoke(s); live(err) {
			counts.fail("revoke: %v", err)
			return
		}
		// Both connections end (end_mode immediate) within 10s.
		deadline := time.Now().Add(10 * time.Second)
		for running.Err() == nil {
			_, perr := pgc.Exec(ctx, "SELECT 1")
			rerr := rc.Get(ctx, "token-key").Err()
			if perr != nil && rerr != nil && !errors.Is(rerr, goredis.Nil) {
				break
			}
			if time.Now().After(deadline) {
				counts.fail("connections of a revoked token still served after 10s: pg %v, redis %v", perr, rerr)
				break
			}
			time.Sleep(50 * time.Millisecond) // polling with a deadline
		}
		counts.revocations.Add(1)
		sleepCtx(running, 2*time.Second)
	})

	// Sample the sidecar.
	var samples []soakSample
	interval := max(d/60, time.Second)
	start := time.Now()
	tick := time.NewTicker(interval)
	for done := false; !done; {
		select {
		case <-running.Done():
			done = true
		case <-tick.C:
		}
		ps, err := harness.SampleProc(st.sidecar.Pid())
		if err != nil {
			t.Fatalf("sample: %v", err)
		}
		m, err := st.sidecar.Metrics()
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		samples = append(samples, soakSample{time.Since(start), ps.RSSKiB, harness.Metric(m, "go_goroutines"), ps.FDs})
	}
	tick.Stop()
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("the soak's clients did not stop within 2 minutes of the end: something hangs")
	}
	if err := st.sidecar.Exited(); err != nil {
		t.Fatalf("sidecar %v", err)
	}

	// The other tenant heard nothing of acme's messages: its own marker,
	// published last, is the first message it receives.
	pubGlobex := redisClient(st.redis, "globex", 1)
	defer pubGlobex.Close()
	mctx, mcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer mcancel()
	if err := pubGlobex.Publish(mctx, soakChannels[0], "globex-marker").Err(); err != nil {
		t.Fatalf("globex publish: %v", err)
	}
	if m, err := eavesdrop.ReceiveMessage(mctx); err != nil {
		t.Errorf("globex's own marker: %v", err)
	} else if m.Payload != "globex-marker" {
		t.Errorf("tenant globex received %q on %s, published by another tenant", m.Payload, m.Channel)
	}

	counts.mu.Lock()
	for _, f := range counts.failures {
		t.Error(f)
	}
	counts.mu.Unlock()
	summary := fmt.Sprintf("%v: %d Postgres transactions, %d Redis commands, %d pub/sub rounds, %d connects, %d policy pushes, %d token revocations",
		d, counts.pgTx.Load(), counts.redisOps.Load(), counts.pubsub.Load(), counts.connects.Load(), counts.pushes.Load(), counts.revocations.Load())
	result(t, groupSoak, "operations (every reply checked)", "%s", summary)
	if counts.pushes.Load() == 0 || counts.revocations.Load() == 0 || counts.pubsub.Load() == 0 {
		t.Errorf("the soak did not exercise everything: %s", summary)
	}

	warm := samples[len(samples)/3:]
	if len(warm) < 4 {
		t.Fatalf("only %d samples after warm-up", len(warm))
	}
	half := len(warm) / 2
	type series struct {
		name  string
		val   func(soakSample) float64
		slack float64 // absolute allowance besides the 10%
		unit  string
	}
	for _, s := range []series{
		{"RSS", func(x soakSample) float64 { return float64(x.rssKiB) / 1024 }, 2, " MiB"},
		{"goroutines", func(x soakSample) float64 { return x.goroutines }, 10, ""},
		{"file descriptors", func(x soakSample) float64 { return float64(x.fds) }, 5, ""},
	} {
		first, second := mean(warm[:half], s.val), mean(warm[half:], s.val)
		slope := slopePerMinute(warm, s.val)
		result(t, groupSoak, s.name+": mean over the first and second half after the warm-up; change; slope",
			"%.1f → %.1f%s; %+.1f%%; %+.2f%s/min", first, second, s.unit, 100*(second-first)/first, slope, s.unit)
		if second > first*1.10+s.slack {
			t.Errorf("%s grew from %.1f to %.1f after warm-up (more than 10%%)", s.name, first, second)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func mean(xs []soakSample, f func(soakSample) float64) float64 {
	var s float64
	for _, x := range xs {
		s += f(x)
	}
	return s / float64(len(xs))
}

// slopePerMinute is the least-squares slope of f over time, per minute.
func slopePerMinute(xs []soakSample, f func(soakSample) float64) float64 {
	var sx, sy, sxx, sxy float64
	n := float64(len(xs))
	for _, x := range xs {
		tx := x.at.Minutes()
		y := f(x)
		sx, sy, sxx, sxy = sx+tx, sy+y, sxx+tx*tx, sxy+tx*y
	}
	den := n*sxx - sx*sx
	if den == 0 || math.IsNaN(den) {
		return 0
	}
	return (n*sxy - sx*sy) / den
}
