package pg_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const (
	appRole      = "tg_app"
	appPassword  = "tg_app_pw"
	acmeSecret   = "acme-secret-1"
	globexSecret = "globex-secret-1"
)

var setupOnce sync.Once

// upstream returns the shared cluster with the app database, its role and
// tables created once per package.
func upstream(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	pg := harness.Postgres(t)
	setupOnce.Do(func() { setupDatabase(t, pg) })
	return pg
}

func setupDatabase(t *testing.T, pg *pgcluster.Cluster) {
	ctx := context.Background()
	for _, q := range []string{
		"CREATE DATABASE app",
		"CREATE ROLE " + appRole + " LOGIN PASSWORD '" + appPassword + "' NOSUPERUSER NOBYPASSRLS",
	} {
		if err := pg.Exec(ctx, "postgres", q); err != nil {
			t.Fatalf("setup %q: %v", q, err)
		}
	}
	for _, q := range []string{
		"CREATE TABLE items (id serial PRIMARY KEY, tenant text NOT NULL, name text NOT NULL, qty int NOT NULL DEFAULT 0)",
		"CREATE TABLE copy_target (a int, b text)",
		"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO " + appRole,
		"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO " + appRole,
		"GRANT CREATE ON SCHEMA public TO " + appRole,
		"INSERT INTO items (tenant, name, qty) SELECT 'acme', 'item' || g, g FROM generate_series(1, 100) g",
	} {
		if err := pg.Exec(ctx, "app", q); err != nil {
			t.Fatalf("setup %q: %v", q, err)
		}
	}
}

// proxy is a running tenantguard Postgres listener for one test.
type proxy struct {
	srv   *proxypg.Server
	store *policy.Store // the policy the listener enforces; see setPolicy
	addr  string
	reg   *prometheus.Registry
	done  chan error
	// shutdown stops the listener, once; the test's cleanup calls it
	// before checking for leaked goroutines. A test running two listeners
	// calls both first: each one's check sees the other's goroutines.
	shutdown func()
}

// startProxy starts a listener in front of pg, applies tweak to its config,
// and shuts it down (checking for leaked goroutines) when the test ends.
func startProxy(t *testing.T, pg *pgcluster.Cluster, tweak func(*proxypg.Config)) *proxy {
	t.Helper()
	return startProxyWith(t, pg, policy.Spec{Tenants: []policy.TenantSpec{
		{ID: "acme", Passwords: []string{acmeSecret}},
		{ID: "globex", Passwords: []string{globexSecret}},
	}}, tweak)
}

// startProxyWith is startProxy with a policy of the test's choosing.
func startProxyWith(t *testing.T, pg *pgcluster.Cluster, spec policy.Spec, tweak func(*proxypg.Config)) *proxy {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	cfg := proxypg.Config{
		Databases: []proxypg.Database{{
			Name: "app",
			URL:  fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/app?sslmode=disable", appRole, appPassword, pg.Port()),
		}},
		PoolSize:        8,
		PoolWaitTimeout: 5 * time.Second,
		StartupTimeout:  5 * time.Second,
		BreakerOpenTime: 200 * time.Millisecond,
		BreakerFailures: 3,
		ConnectTimeout:  2 * time.Second,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	store := policy.NewStore(snap)
	srv, err := proxypg.New(cfg, store, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{srv: srv, store: store, addr: ln.Addr().String(), reg: reg, done: make(chan error, 1)}
	go func() { p.done <- srv.Serve(ln) }()
	var once sync.Once
	p.shutdown = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			if err := <-p.done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		p.shutdown()
		goleak.VerifyNone(t, ignore,
			// a server the test restarted is watched by a new goroutine of the harness
			goleak.IgnoreAnyFunction("github.com/tenantguard/tenantguard/internal/fixture/childproc.(*Process).wait"))
	})
	return p
}

// url is a connection string to the proxy as tenant with password.
func (p *proxy) url(tenant, password string, params ...string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(tenant, password), Host: p.addr, Path: "/app"}
	q := url.Values{"sslmode": {"disable"}}
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	// pgx reads the query with PathUnescape: spaces as %20, not +.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

func (p *proxy) acmeURL(params ...string) string { return p.url("acme", acmeSecret, params...) }

func (p *proxy) connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect through proxy: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// metric returns the value of a gauge or counter with the given labels.
func (p *proxy) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
