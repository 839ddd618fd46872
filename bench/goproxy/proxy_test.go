// Package goproxy holds Go benchmarks of the Postgres data plane in
// process: one query round trip direct and through tenantguard, with the
// proxy's allocations per query (the difference of the two allocs/op).
//
//	go test ./bench/goproxy -run '^$' -bench . -benchmem
package goproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

var setup sync.Once

func upstreamURL(b *testing.B) string {
	pg := harness.Postgres(b)
	setup.Do(func() {
		ctx := context.Background()
		_ = pg.Exec(ctx, "postgres", "CREATE ROLE bench_app LOGIN PASSWORD 'bench_pw'")
		_ = pg.Exec(ctx, "postgres", "CREATE TABLE IF NOT EXISTS kv (k int PRIMARY KEY, v text); INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING; GRANT SELECT ON kv TO bench_app")
	})
	return fmt.Sprintf("postgres://bench_app:bench_pw@127.0.0.1:%d/postgres?sslmode=disable", pg.Port())
}

func startProxy(b *testing.B, upstream string) string {
	snap, err := policy.Compile(policy.Spec{Tenants: []policy.TenantSpec{{ID: "acme", Passwords: []string{"acme-secret-1"}}}})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := proxypg.New(proxypg.Config{
		Databases: []proxypg.Database{{Name: "postgres", URL: upstream}},
		PoolSize:  4,
	}, policy.NewStore(snap), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "postgres://acme:acme-secret-1@" + ln.Addr().String() + "/postgres?sslmode=disable"
}

func benchQuery(b *testing.B, url string, extended bool) {
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	args := [][]byte{[]byte("42")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if extended {
			if err := c.ExecParams(ctx, "SELECT v FROM kv WHERE k = $1", args, nil, nil, nil).Read().Err; err != nil {
				b.Fatal(err)
			}
		} else if _, err := c.Exec(ctx, "SELECT v FROM kv WHERE k = 42").ReadAll(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSimpleDirect(b *testing.B)    { benchQuery(b, upstreamURL(b), false) }
func BenchmarkSimpleProxied(b *testing.B)   { benchQuery(b, startProxy(b, upstreamURL(b)), false) }
func BenchmarkExtendedDirect(b *testing.B)  { benchQuery(b, upstreamURL(b), true) }
func BenchmarkExtendedProxied(b *testing.B) { benchQuery(b, startProxy(b, upstreamURL(b)), true) }
