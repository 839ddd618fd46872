package redis_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/policy"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const (
	acmeSecret   = "acme-secret-1"
	globexSecret = "globex-secret-1"
)

type proxy struct {
	srv   *proxyredis.Server
	store *policy.Store // the policy the listener enforces; see setPolicy
	addr  string
	redis string // upstream address
	reg   *prometheus.Registry
	logs  *logBuffer
}

func startProxy(t testing.TB, tweak func(*proxyredis.Config)) *proxy {
	t.Helper()
	return startProxyWith(t, nil, tweak)
}

// startProxyWith lets a test change the policy too.
func startProxyWith(t testing.TB, specTweak func(*policy.Spec), tweak func(*proxyredis.Config)) *proxy {
	t.Helper()
	rd := harness.Redis(t)
	ignore := goleak.IgnoreCurrent()
	cfg := proxyredis.Config{Upstream: rd.Addr(), Emulate: map[string]bool{"flushdb": true, "flushall": true, "dbsize": true}}
	if tweak != nil {
		tweak(&cfg)
	}
	spec := policy.Spec{Tenants: []policy.TenantSpec{
		{ID: "acme", Passwords: []string{acmeSecret}},
		{ID: "globex", Passwords: []string{globexSecret}},
	}}
	if specTweak != nil {
		specTweak(&spec)
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	var logTo io.Writer = logs
	if testing.Verbose() {
		logTo = io.MultiWriter(logs, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	store := policy.NewStore(snap)
	srv, err := proxyredis.New(cfg, store, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		goleak.VerifyNone(t, ignore,
			// a server the test restarted is watched by a new goroutine of the harness
			goleak.IgnoreAnyFunction("github.com/tenantguard/tenantguard/internal/fixture/childproc.(*Process).wait"))
	})
	return &proxy{srv: srv, store: store, addr: ln.Addr().String(), redis: rd.Addr(), reg: reg, logs: logs}
}

// logBuffer keeps what the listener logged, for tests that check it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the lines logged so far that contain every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range strings.Split(l.b.String(), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

func (p *proxy) client(t *testing.T, tenant, secret string, proto int) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: p.addr, Username: tenant, Password: secret, Protocol: proto, DisableIdentity: true, PoolSize: 4})
	t.Cleanup(func() { c.Close() })
	return c
}

func (p *proxy) direct(t *testing.T) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: p.redis, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// metric returns the value of a counter or gauge with the given labels.
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
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == k && l.GetValue() == v
				}
				if !found {
					continue next
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
