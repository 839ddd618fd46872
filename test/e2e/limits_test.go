package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestFileDescriptorLimit runs a sidecar under `ulimit -n 512` and opens 600
// connections that never send a byte (each held until the startup
// timeout): the process must keep running, connections past what its
// descriptors allow must be refused at once with the protocol's own
// error (PostgreSQL 53300, Redis -ERR max number of clients reached)
// instead of hanging, and once the flood ends, clients are served again.
// Before the fix, EMFILE in accept ended the whole process.
func TestFileDescriptorLimit(t *testing.T) {
	pg := harness.Postgres(t)
	rd := harness.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, q := range []string{"CREATE ROLE fd_app LOGIN PASSWORD 'fd_pw'", "CREATE DATABASE fd"} {
		if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
			t.Fatal(err)
		}
	}
	listen, redisListen, admin := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`listen:
  postgres: %q
  redis: %q
  admin: %q
postgres:
  databases:
    - name: fd
      url: "postgres://fd_app:fd_pw@127.0.0.1:%d/fd?sslmode=disable"
  startup_timeout: 30s
redis:
  upstream: %q
  max_dedicated_connections: 16
tenants:
  - id: acme
    passwords: ["acme-secret-1"]
`, listen, redisListen, admin, pg.Port(), rd.Addr())
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startCommand(t, "/bin/sh", "-c", `ulimit -n 512 && exec "$0" "$@"`, binary, "sidecar", "--config", path)
	harness.Eventually(t, 30*time.Second, func() error {
		code, _, err := httpGet(ctx, "http://"+admin+"/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("readyz %d", code)
		}
		return nil
	})
	pgURL := "postgres://acme:acme-secret-1@" + listen + "/fd?sslmode=disable"
	query := func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(cctx, pgURL)
		if err != nil {
			return err
		}
		defer c.Close(cctx)
		var one int
		return c.QueryRow(cctx, "SELECT 1").Scan(&one)
	}
	if err := query(); err != nil {
		t.Fatalf("before the flood: %v", err)
	}

	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			_ = c.Close()
		}
	}()
	for i := 0; i < 600; i++ {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	// The ones over the limit are told so at once; the others wait in startup.
	refused := 0
	for _, c := range flood {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		var hdr [1]byte
		if n, _ := c.Read(hdr[:]); n == 1 {
			if hdr[0] != 'E' {
				t.Fatalf("a flooding connection got message %q, want an ErrorResponse", hdr[0])
			}
			refused++
		}
	}
	t.Logf("600 idle connections under ulimit -n 512: %d refused with an error at once", refused)
	if refused == 0 {
		t.Fatal("no connection refused under a 512-descriptor limit with 600 open")
	}
	if err := p.exited(); err != nil {
		t.Fatalf("sidecar exited during the flood: %v", err)
	}

	// A real client at the limit gets PostgreSQL's "too many connections" at once.
	start := time.Now()
	err := query()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "53300" {
		t.Fatalf("client at the limit: %v, want SQLSTATE 53300", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusal took %v", d)
	}
	// Redis shares the descriptor budget, and says so as redis-server does.
	rc, err := net.DialTimeout("tcp", redisListen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(rc).ReadString('\n')
	_ = rc.Close()
	if strings.TrimSpace(line) != "-ERR max number of clients reached" {
		t.Fatalf("redis client at the limit got %q", line)
	}

	for _, c := range flood {
		_ = c.Close()
	}
	flood = nil
	harness.Eventually(t, 20*time.Second, query)
	r := goredis.NewClient(&goredis.Options{Addr: redisListen, Username: "acme", Password: "acme-secret-1"})
	defer r.Close()
	harness.Eventually(t, 20*time.Second, func() error { return r.Set(ctx, "fd", "ok", 0).Err() })
	if err := p.exited(); err != nil {
		t.Fatalf("sidecar exited: %v", err)
	}
	if out := p.output(); strings.Contains(out, "too many open files") && strings.Contains(out, "level=ERROR") {
		t.Errorf("sidecar logged an error for the descriptor limit:\n%s", out)
	}
}
