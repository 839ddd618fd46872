package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// Bootstrap installs row-level isolation in every configured upstream
// database, connecting with adminURL (a role that owns the tables) but to
// each database's own name, for each database's upstream role.
func Bootstrap(ctx context.Context, cfg *config.Sidecar, adminURL string, out io.Writer) error {
	if cfg.Postgres.Binder == nil {
		return errors.New("isolation is not enabled in the configuration (isolation.tables and isolation.binding_key)")
	}
	done := map[string]bool{}
	for _, db := range cfg.Postgres.Databases {
		up, err := pgx.ParseConfig(db.URL)
		if err != nil {
			return fmt.Errorf("database %s: %w", db.Name, err)
		}
		key := up.Database + "/" + up.User
		if done[key] {
			continue
		}
		done[key] = true
		u, err := url.Parse(adminURL)
		if err != nil {
			return fmt.Errorf("--admin-url: %w", err)
		}
		u.Path = "/" + up.Database
		c, err := pgx.Connect(ctx, u.String())
		if err != nil {
			return fmt.Errorf("connect as administrator to %s: %w", up.Database, err)
		}
		err = rls.Bootstrap(ctx, c, up.User, cfg.Policy, cfg.Postgres.Binder)
		c.Close(ctx)
		if err != nil {
			return fmt.Errorf("database %s: %w", up.Database, err)
		}
		fmt.Fprintf(out, "bootstrapped database %s for role %s: %d table(s) protected\n", up.Database, up.User, len(cfg.Policy.Tables()))
	}
	return nil
}

// Check audits every configured upstream as its role sees it and prints
// the report. It returns an error if any problem would stop the sidecar.
func Check(ctx context.Context, cfg *config.Sidecar, out io.Writer) error {
	if cfg.Postgres.Binder == nil {
		return errors.New("isolation is not enabled in the configuration")
	}
	failed := false
	for _, db := range cfg.Postgres.Databases {
		c, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			return fmt.Errorf("database %s: connect as upstream role: %w", db.Name, err)
		}
		rep, err := rls.Check(ctx, c, cfg.Policy, cfg.Postgres.Binder)
		c.Close(ctx)
		if err != nil {
			return fmt.Errorf("database %s: %w", db.Name, err)
		}
		for _, p := range rep.Problems {
			fmt.Fprintf(out, "%s: PROBLEM: %s\n", db.Name, p)
		}
		for _, w := range rep.Warnings {
			fmt.Fprintf(out, "%s: warning: %s\n", db.Name, w)
		}
		if rep.OK() {
			fmt.Fprintf(out, "%s: ok\n", db.Name)
		} else {
			failed = true
		}
	}
	if failed {
		return errors.New("isolation check failed: the sidecar would refuse to serve")
	}
	return nil
}
