package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

// server is the throwaway PostgreSQL and what the benchmark needs of it.
type server struct {
	*pgcluster.Cluster
	postmaster int // pid, for CPU accounting
}

// startPostgres starts PostgreSQL, creates the roles and, for every
// variant, table t_<variant> with rows rows of tenant acme (ids 1..rows)
// and otherRows of tenant globex after them, owned by the superuser,
// readable and writable by appRole, with RLS forced and the variant's
// policy.
func startPostgres(ctx context.Context, rows int, vs []variant) (s *server, err error) {
	c, err := pgcluster.Start(ctx, pgcluster.Options{ExtraConf: map[string]string{
		"max_connections": "100",
		"shared_buffers":  "512MB", // every variant's table stays cached
	}})
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	s = &server{Cluster: c}
	if s.postmaster, err = postmasterPID(c); err != nil {
		return nil, err
	}
	if err := c.CreateDatabase(ctx, dbName); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	roles := fmt.Sprintf("CREATE ROLE %s LOGIN NOSUPERUSER NOBYPASSRLS; CREATE ROLE %s LOGIN; CREATE ROLE %s LOGIN",
		appRole, tenantID, otherID)
	if err := c.Exec(ctx, "postgres", roles); err != nil {
		return nil, fmt.Errorf("create roles: %w", err)
	}
	conn, err := pgx.Connect(ctx, c.AdminURL(dbName))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, v := range vs {
		if err := createTable(ctx, conn, v, rows); err != nil {
			return nil, err
		}
	}
	// Nothing left for background processes to do during the runs, whose
	// CPU time counts as the server's: set hint bits and the visibility map,
	// write the dirty buffers, and load every table into shared buffers.
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return nil, fmt.Errorf("vacuum: %w", err)
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_prewarm"); err != nil {
		return nil, fmt.Errorf("pg_prewarm (PostgreSQL contrib): %w", err)
	}
	for _, v := range vs {
		if _, err := conn.Exec(ctx, "SELECT pg_prewarm($1::regclass), pg_prewarm($2::regclass)", v.table(), v.table()+"_pkey"); err != nil {
			return nil, fmt.Errorf("prewarm %s: %w", v.table(), err)
		}
	}
	return s, nil
}

// createTable creates and fills v's table and installs v's policy.
func createTable(ctx context.Context, conn *pgx.Conn, v variant, rows int) error {
	t := v.table()
	steps := []string{
		fmt.Sprintf("CREATE TABLE %s (id int PRIMARY KEY, tenant_id text NOT NULL, abalance int NOT NULL DEFAULT 0, filler char(84))", t),
		fmt.Sprintf("INSERT INTO %s SELECT g, CASE WHEN g > %d THEN '%s' ELSE '%s' END, 0, '' FROM generate_series(1, %d) g",
			t, rows, otherID, tenantID, rows+otherRows),
		fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s, %s, %s", t, appRole, tenantID, otherID),
	}
	if v.rls {
		steps = append(steps, fmt.Sprintf("ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY", t))
	}
	if v.setup != "" {
		steps = append(steps, v.setupSQL())
	}
	for _, q := range steps {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("variant %s: %s: %w", v.name, firstLine(q), err)
		}
	}
	if v.install != nil {
		if err := v.install(ctx, conn); err != nil {
			return fmt.Errorf("variant %s: %w", v.name, err)
		}
	}
	return nil
}

// checkIsolation shows v isolates before it is measured: bound to acme a
// connection counts the acme rows, bound to globex the globex rows (and
// without RLS, every row).
func checkIsolation(ctx context.Context, s *server, v variant, rows int) error {
	for _, c := range []struct {
		tenant string
		want   int
	}{{tenantID, rows}, {otherID, otherRows}} {
		if !v.rls {
			c.want = rows + otherRows
		}
		got, err := countAs(ctx, s, v, c.tenant)
		if err != nil {
			return fmt.Errorf("isolation check of %s as %s: %w", v.name, c.tenant, err)
		}
		if got != c.want {
			return fmt.Errorf("isolation check of %s FAILED: bound to %s a connection counts %d rows of %s, want %d", v.name, c.tenant, got, v.table(), c.want)
		}
	}
	return nil
}

// countAs counts v's table on a new connection bound to tenant.
func countAs(ctx context.Context, s *server, v variant, tenant string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	login := appRole
	if v.login != "" {
		login = tenant
	}
	conn, err := pgx.Connect(ctx, s.url(login))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if v.bind != nil {
		if _, err := conn.Exec(ctx, v.bind(tenant), pgx.QueryExecModeSimpleProtocol); err != nil {
			return 0, err
		}
	}
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*)::int FROM "+v.table()).Scan(&n)
	return n, err
}

// url is a connection URL to the bench database as role.
func (s *server) url(role string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", role, s.Port(), dbName)
}

// postmasterPID reads the first line of the data directory's postmaster.pid.
func postmasterPID(c *pgcluster.Cluster) (int, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir(), "data", "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read postmaster.pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("parse postmaster.pid: %w", err)
	}
	return pid, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
