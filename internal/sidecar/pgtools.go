package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// Bootstrap installs row-level isolation in every upstream database the
// policy reaches: each configured database, and the same database on
// every PostgreSQL cluster of the policy (placement). It connects with
// adminURL's role and password (a role that owns the tables), to the
// database's own name, on the configured host or the cluster's hosts, for
// each upstream's role.
func Bootstrap(ctx context.Context, cfg *config.Sidecar, adminURL string, out io.Writer) error {
	if cfg.Postgres.Binder == nil {
		return errors.New("isolation is not enabled in the configuration (isolation.tables and isolation.binding_key)")
	}
	ups, err := proxypg.Upstreams(cfg.Postgres, cfg.Policy)
	if err != nil {
		return err
	}
	for _, up := range ups {
		adm, err := pgx.ParseConfig(adminURL)
		if err != nil {
			return fmt.Errorf("--admin-url: %w", err)
		}
		adm.Database = up.Config.Database
		if up.Cluster != "" && (up.Config.Host != adm.Host || up.Config.Port != adm.Port || len(up.Config.Fallbacks) > 0) {
			// The cluster's hosts, the administrator's credentials.
			adm.Host, adm.Port, adm.TLSConfig = up.Config.Host, up.Config.Port, up.Config.TLSConfig
			adm.Fallbacks = up.Config.Fallbacks
		}
		c, err := pgx.ConnectConfig(ctx, adm)
		if err != nil {
			return fmt.Errorf("%s: connect as administrator to %s: %w", where(up), up.Config.Database, err)
		}
		err = rls.Bootstrap(ctx, c, up.Config.User, cfg.Policy, cfg.Postgres.Binder)
		c.Close(ctx)
		if err != nil {
			return fmt.Errorf("%s: database %s: %w", where(up), up.Config.Database, err)
		}
		fmt.Fprintf(out, "%s: bootstrapped database %s for role %s: %d table(s) protected\n", where(up), up.Config.Database, up.Config.User, len(cfg.Policy.Tables()))
	}
	return nil
}

// where names an upstream in output: its cluster and host.
func where(up proxypg.Upstream) string {
	name := up.Cluster
	if name == "" {
		name = "configured upstream"
	} else {
		name = "cluster " + name
	}
	return fmt.Sprintf("%s (%s:%d)", name, up.Config.Host, up.Config.Port)
}

// Check audits every upstream the policy reaches (as Bootstrap lists
// them) as its role sees it and prints the report. It returns an error if
// any problem would stop the sidecar.
func Check(ctx context.Context, cfg *config.Sidecar, out io.Writer) error {
	if cfg.Postgres.Binder == nil {
		return errors.New("isolation is not enabled in the configuration")
	}
	ups, err := proxypg.Upstreams(cfg.Postgres, cfg.Policy)
	if err != nil {
		return err
	}
	failed := false
	for _, up := range ups {
		cc, err := pgx.ParseConfig("")
		if err != nil {
			return err
		}
		cc.Config = *up.Config.Copy()
		c, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return fmt.Errorf("%s: database %s: connect as upstream role: %w", where(up), up.Database, err)
		}
		rep, err := rls.Check(ctx, c, cfg.Policy, cfg.Postgres.Binder)
		c.Close(ctx)
		if err != nil {
			return fmt.Errorf("%s: database %s: %w", where(up), up.Database, err)
		}
		label := up.Database
		if up.Cluster != "" {
			label = up.Cluster + "/" + up.Database
		}
		for _, p := range rep.Problems {
			fmt.Fprintf(out, "%s: PROBLEM: %s\n", label, p)
		}
		for _, w := range rep.Warnings {
			fmt.Fprintf(out, "%s: warning: %s\n", label, w)
		}
		if rep.OK() {
			fmt.Fprintf(out, "%s: ok\n", label)
		} else {
			failed = true
		}
	}
	if failed {
		return errors.New("isolation check failed: the sidecar would refuse to serve")
	}
	return nil
}

// UsePolicyFile makes the policy of cfg (its tables and clusters, for pg
// bootstrap and pg check) the one in a policy file as the control plane
// serves it (YAML or JSON: GET /v1/policy) or as it seeds it (a file or a
// directory, plaintext credentials allowed), for sidecars whose policy
// comes from a control plane.
func UsePolicyFile(cfg *config.Sidecar, path string) error {
	var p *policypb.Policy
	if st, err := os.Stat(path); err != nil {
		return err
	} else if st.IsDir() {
		if p, err = policypb.LoadDir(path); err != nil {
			return err
		}
	} else {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if p, err = policypb.ParseYAML(data); err != nil { // YAML is a superset of JSON
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	// Only tables and clusters matter here, but the policy must be valid
	// as the control plane would take it: a seed's plaintext credentials
	// become verifiers first.
	if err := policypb.HashCredentials(p); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := policypb.Validate(p); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	spec, err := policypb.ToSpec(p)
	if err != nil {
		return err
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		return err
	}
	cfg.Policy = snap
	return nil
}
