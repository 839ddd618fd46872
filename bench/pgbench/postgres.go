package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

// hbaConf replaces pgcluster's all-trust pg_hba.conf so that benchuser must
// authenticate with SCRAM, as it would in production: the superuser keeps
// trust for set-up.
const hbaConf = `local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
`

// startPostgres starts a throwaway PostgreSQL with database bench and the
// pgbench tables at scale `scale`, owned by the superuser, each with a
// tenant column whose every row belongs to rowTenant. It creates two
// non-superuser roles allowed to read and write them: benchuser, with
// BYPASSRLS, for the targets without isolation (so row-level security,
// installed later for tenantguard+iso, does not hide rows from them), and
// benchiso, the upstream role of tenantguard+iso, which pg bootstrap grants
// its privileges.
func startPostgres(ctx context.Context, rowTenant string) (c *pgcluster.Cluster, err error) {
	c, err = pgcluster.Start(ctx, pgcluster.Options{ExtraConf: map[string]string{
		"max_connections": "300",
		"shared_buffers":  "256MB",
	}})
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	if err := requirePasswords(ctx, c); err != nil {
		return nil, err
	}
	if err := c.CreateDatabase(ctx, dbName); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	roles := fmt.Sprintf("SET password_encryption = 'scram-sha-256'; "+
		"CREATE ROLE %s LOGIN BYPASSRLS PASSWORD '%s'; CREATE ROLE %s LOGIN PASSWORD '%s'",
		dbUser, dbPassword, isoUser, isoPass)
	if err := c.Exec(ctx, "postgres", roles); err != nil {
		return nil, fmt.Errorf("create roles %s, %s: %w", dbUser, isoUser, err)
	}
	cmd := exec.CommandContext(ctx, "pgbench", "-i", "-s", strconv.Itoa(scale), "-q",
		"-h", "127.0.0.1", "-p", strconv.Itoa(c.Port()), "-U", "postgres", dbName)
	cmd.Env = pgEnv("")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	// A constant default is stored in the catalog, not written to every row.
	var alter strings.Builder
	for _, t := range isoTables {
		fmt.Fprintf(&alter, "ALTER TABLE %s ADD COLUMN %s text NOT NULL DEFAULT %s; ",
			t, tenantColumn, quoteLiteral(rowTenant))
	}
	if err := c.Exec(ctx, dbName, alter.String()); err != nil {
		return nil, fmt.Errorf("add tenant columns: %w", err)
	}
	grant := "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO " + dbUser
	if err := c.Exec(ctx, dbName, grant); err != nil {
		return nil, fmt.Errorf("grant to %s: %w", dbUser, err)
	}
	return c, nil
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// requirePasswords installs hbaConf and reloads the server configuration.
func requirePasswords(ctx context.Context, c *pgcluster.Cluster) error {
	conn, err := pgx.Connect(ctx, c.AdminURL("postgres"))
	if err != nil {
		return fmt.Errorf("connect as superuser: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var path string
	if err := conn.QueryRow(ctx, "SHOW hba_file").Scan(&path); err != nil {
		return fmt.Errorf("find pg_hba.conf: %w", err)
	}
	if err := os.WriteFile(path, []byte(hbaConf), 0o600); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	var bad int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL").Scan(&bad); err != nil || bad > 0 {
		return fmt.Errorf("check pg_hba.conf: %d bad lines (%v)", bad, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("reload configuration: %w", err)
	}
	return nil
}

// pgEnv is the environment for libpq tools: the caller's, with TLS off (no
// target here offers it) and password set when given.
func pgEnv(password string) []string {
	env := append(os.Environ(), "PGSSLMODE=disable")
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return env
}
