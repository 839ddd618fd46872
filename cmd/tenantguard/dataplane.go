//go:build !extauthz

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/procs"
	"github.com/tenantguard/tenantguard/internal/sidecar"
)

func runSidecar(ctx context.Context, args []string, stderr io.Writer) int {
	return runService(ctx, "sidecar", args, stderr, config.Load,
		func(ctx context.Context, cfg *config.Sidecar, log *slog.Logger) (runner, error) {
			cfg.Version = version
			n, src := procs.Apply(cfg.Procs)
			log.Info("go procs", "procs", n, "from", src)
			return sidecar.Start(ctx, cfg, log)
		})
}

func runPG(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "fingerprint" {
		if len(args) != 2 {
			fmt.Fprintln(stderr, "usage: tenantguard pg fingerprint 'SELECT …'")
			return 2
		}
		if err := sidecar.Fingerprint(args[1], stdout); err != nil {
			fmt.Fprintln(stderr, "tenantguard pg fingerprint:", err)
			return 1
		}
		return 0
	}
	if len(args) == 0 || (args[0] != "bootstrap" && args[0] != "check") {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("pg "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "sidecar configuration file (YAML)")
	admin := fs.String("admin-url", os.Getenv("TG_PG_ADMIN_URL"), "bootstrap: URL of a role that owns the protected tables (default $TG_PG_ADMIN_URL); on a policy cluster, its role and password on the cluster's hosts")
	policyFile := fs.String("policy", "", "a policy file (YAML or JSON, as GET /v1/policy serves it or a control plane seed file or directory) whose tables and clusters to use instead of the configuration's")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintf(stderr, "tenantguard pg %s: --config FILE is required\n", args[0])
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "tenantguard pg: config error:", err)
		return 1
	}
	if *policyFile != "" {
		if err := sidecar.UsePolicyFile(cfg, *policyFile); err != nil {
			fmt.Fprintln(stderr, "tenantguard pg: policy error:", err)
			return 1
		}
	}
	if args[0] == "bootstrap" {
		if *admin == "" {
			fmt.Fprintln(stderr, "tenantguard pg bootstrap: --admin-url is required")
			return 2
		}
		err = sidecar.Bootstrap(ctx, cfg, *admin, stdout)
	} else {
		err = sidecar.Check(ctx, cfg, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tenantguard pg %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
