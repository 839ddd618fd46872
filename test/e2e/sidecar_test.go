package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestConfigErrors: a bad configuration names file and field and exits
// non-zero before listening.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(path, []byte("listen:\n  postgres: 127.0.0.1:1\npostgres:\n  databases: []\ntenants: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "sidecar", "--config", path)
	if code := p.wait(t, 30*time.Second); code == 0 {
		t.Fatal("exit code 0 for a bad config")
	}
	out := p.output()
	if !strings.Contains(out, path+": postgres.databases: at least one database is required") {
		t.Fatalf("output does not name file and field:\n%s", out)
	}
	if strings.Contains(out, "sidecar ready") {
		t.Fatalf("listened despite a bad config:\n%s", out)
	}
	p = start(t, "sidecar")
	if code := p.wait(t, 30*time.Second); code != 2 {
		t.Fatalf("missing --config: exit %d", code)
	}
}

func freeAddr(t *testing.T) string {
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// TestSIGTERMDrain: on SIGTERM the sidecar stops accepting, lets the
// transaction in flight commit, then exits 0.
func TestSIGTERMDrain(t *testing.T) {
	pg := harness.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, q := range []string{
		"CREATE ROLE drain_app LOGIN PASSWORD 'drain_pw'",
		"CREATE DATABASE drain",
	} {
		// 42710/42P04: made by an earlier run of this test (-count).
		if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
			t.Fatal(err)
		}
	}
	if err := pg.Exec(ctx, "drain", "CREATE TABLE IF NOT EXISTS t (v text); GRANT SELECT, INSERT ON t TO drain_app; DELETE FROM t"); err != nil {
		t.Fatal(err)
	}
	listen, admin := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`listen:
  postgres: %q
  admin: %q
postgres:
  databases:
    - name: drain
      url: "postgres://drain_app:drain_pw@127.0.0.1:%d/drain?sslmode=disable"
tenants:
  - id: acme
    passwords: ["acme-secret-1"]
drain_timeout: 20s
`, listen, admin, pg.Port())
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "sidecar", "--config", path)
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
	url := "postgres://acme:acme-secret-1@" + listen + "/drain?sslmode=disable"
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ('in flight')"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		c2, err := pgx.Connect(ctx, url)
		if err == nil {
			c2.Close(ctx)
			return errors.New("new client still accepted after SIGTERM")
		}
		return nil
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit in flight during drain: %v", err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after drain", code)
	}
	a, err := pgx.Connect(ctx, pg.AdminURL("drain"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	var n int
	if err := a.QueryRow(ctx, "SELECT count(*) FROM t WHERE v = 'in flight'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("row committed during drain: %d %v", n, err)
	}
}
