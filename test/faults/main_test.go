// Package faults runs the sidecar binary, as a child process, through
// upstream failures, drains, ten thousand connections and hostile clients
// (issue 17), against real PostgreSQL and redis-server processes.
//
// The short forms run in `make test`; TG_FAULTS_FULL=1 (`make faults`)
// runs the long ones: 10,000 idle clients per protocol instead of 1,000.
// TG_FAULTS_RACE=1 builds the sidecar with the race detector.
// TG_FAULTS_RESULTS=FILE writes the figures the tests log as markdown
// tables to FILE (results_test.go); `make soak` runs TestSoak for
// TG_SOAK_DURATION (soak_test.go).
package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/test/harness"
)

var tgBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tenantguard-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tgBinary, err = harness.BuildTenantguard(dir, os.Getenv("TG_FAULTS_RACE") == "1")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := harness.Run(m)
	_ = os.RemoveAll(dir)
	if path := os.Getenv("TG_FAULTS_RESULTS"); path != "" {
		if err := writeFigures(path, code != 0); err != nil {
			fmt.Fprintln(os.Stderr, "faults: results:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// full reports whether the long forms run (TG_FAULTS_FULL=1).
func full() bool { return os.Getenv("TG_FAULTS_FULL") == "1" }

// envInt is the integer in env var name, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

const (
	appRole    = "faults_app"
	appPass    = "faults_pw"
	appDB      = "faults"
	acmePass   = "acme-secret-1"
	globexPass = "globex-secret-1"
	consolePW  = "console-secret-1"
)

// setupPostgres makes the role, the database and its tables, once per
// run; the counters and ledger tables are emptied for each test.
func setupPostgres(t *testing.T, pg interface {
	Exec(context.Context, string, string) error
}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, q := range []string{
		// Commits are durable across a SIGKILL of the server, so a commit
		// the client saw acknowledged must be there after the restart
		// (the harness's cluster runs with synchronous_commit off).
		"CREATE ROLE " + appRole + " LOGIN PASSWORD '" + appPass + "'",
		"ALTER ROLE " + appRole + " SET synchronous_commit = on",
		"CREATE DATABASE " + appDB,
	} {
		if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
			t.Fatal(err)
		}
	}
	if err := pg.Exec(ctx, appDB, `
CREATE TABLE IF NOT EXISTS counters (k int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS ledger (client int NOT NULL, seq int NOT NULL, note text);
GRANT SELECT, INSERT, UPDATE, DELETE ON counters, ledger TO `+appRole+`;
TRUNCATE counters, ledger;
INSERT INTO counters (k) SELECT g FROM generate_series(1, 1000) g;`); err != nil {
		t.Fatal(err)
	}
}

// pgSidecarConfig is a sidecar serving database appDB at upstream port,
// tenants acme and globex, and the admin console; pgExtra goes in the
// postgres section (indented by two spaces), extra at the top level.
func pgSidecarConfig(listen, admin string, upstreamPort int, pgExtra, extra string) string {
	return fmt.Sprintf(`listen:
  postgres: %q
  admin: %q
postgres:
  databases:
    - name: %s
      url: "postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable"
  console:
    user: tgadmin
    password: %s
%stenants:
  - id: acme
    passwords: [%q]
  - id: globex
    passwords: [%q]
%s`, listen, admin, appDB, appRole, appPass, upstreamPort, appDB, consolePW, pgExtra, acmePass, globexPass, extra)
}

// tenantURL is the URL of tenant at the sidecar's Postgres listener.
func tenantURL(listen, tenant string) string {
	pw := acmePass
	if tenant == "globex" {
		pw = globexPass
	}
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable&connect_timeout=10", tenant, pw, listen, appDB)
}

// sqlstate is err's SQLSTATE, or "" when err carries none.
func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// selectOne runs SELECT 1 on a new connection as tenant.
func selectOne(ctx context.Context, listen, tenant string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, tenantURL(listen, tenant))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var one int
	return c.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// serverPIDs lists the upstream backends the sidecar's pools hold, from
// the admin console's SHOW SERVERS.
func serverPIDs(ctx context.Context, listen string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://tgadmin:%s@%s/tenantguard?sslmode=disable", consolePW, listen))
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, "SHOW SERVERS", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var pids []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		for i, f := range rows.FieldDescriptions() {
			if f.Name == "remote_pid" {
				pids = append(pids, fmt.Sprint(vals[i]))
			}
		}
	}
	return pids, rows.Err()
}

// noDeadServers checks that every upstream connection the sidecar's pool
// holds is a live backend of the application role.
func noDeadServers(ctx context.Context, listen, adminURL string) error {
	pids, err := serverPIDs(ctx, listen)
	if err != nil {
		return fmt.Errorf("SHOW SERVERS: %w", err)
	}
	c, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	live := map[string]bool{}
	rows, err := c.Query(ctx, "SELECT pid::text FROM pg_stat_activity WHERE usename = $1", appRole)
	if err != nil {
		return err
	}
	for rows.Next() {
		var pid string
		if err := rows.Scan(&pid); err != nil {
			return err
		}
		live[pid] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, pid := range pids {
		if !live[pid] {
			return fmt.Errorf("the pool holds server pid %s, which PostgreSQL does not have (pool %v, live %v)", pid, pids, live)
		}
	}
	return nil
}
