package pgcluster_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/internal/pgcluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func queryInt(t *testing.T, ctx context.Context, url, sql string) int {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestStartStopStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{ExtraConf: map[string]string{"application_name": "pgcluster_test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Host() != "127.0.0.1" || c.Port() == 0 || c.Dir() == "" {
		t.Fatalf("bad address %s:%d dir %q", c.Host(), c.Port(), c.Dir())
	}
	if got := queryInt(t, ctx, c.AdminURL("postgres"), "select 1"); got != 1 {
		t.Fatalf("select 1 = %d", got)
	}
	if err := c.CreateDatabase(ctx, "app db"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "app db", "create table kept(n int); insert into kept values (42)"); err != nil {
		t.Fatal(err)
	}

	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := c.Exec(ctx, "postgres", "select 1"); err == nil {
		t.Fatal("exec succeeded on a stopped server")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := c.Start(ctx); err == nil {
		t.Fatal("second Start on a running server succeeded")
	}
	if got := queryInt(t, ctx, c.AdminURL("app db"), "select n from kept"); got != 42 {
		t.Fatalf("data after restart = %d, want 42", got)
	}

	dir := c.Dir()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir %s still exists after Close: %v", dir, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestFreePort(t *testing.T) {
	p, err := pgcluster.FreePort()
	if err != nil || p <= 0 || p > 65535 {
		t.Fatalf("FreePort() = %d, %v", p, err)
	}
}
