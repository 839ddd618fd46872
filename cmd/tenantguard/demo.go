//go:build !sidecar && !extauthz

package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/tenantguard/tenantguard/internal/demo"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts demo.Options
	fs.StringVar(&opts.EnvFile, "env-file", "tenantguard-demo.env", "where to write the connection settings (dotenv)")
	fs.StringVar(&opts.PostgresURL, "pg-url", "", "use this PostgreSQL (superuser URL) instead of starting one")
	fs.StringVar(&opts.RedisURL, "redis-url", "", "use this redis-server (redis://host:port) instead of starting one")
	fs.StringVar(&opts.Listen, "listen", "127.0.0.1:0", "sidecar PostgreSQL listen address")
	fs.StringVar(&opts.RedisListen, "redis-listen", "127.0.0.1:0", "sidecar Redis listen address")
	fs.StringVar(&opts.AdminListen, "admin-listen", "127.0.0.1:0", "sidecar admin (metrics) listen address")
	fs.StringVar(&opts.AuthzListen, "extauthz-listen", "127.0.0.1:0", "ext_authz gRPC listen address")
	fs.StringVar(&opts.APIListen, "session-api-listen", "127.0.0.1:0", "session HTTP API listen address")
	fs.StringVar(&opts.XDSListen, "xds-listen", "127.0.0.1:0", "control plane xDS listen address")
	fs.StringVar(&opts.AdminAPIListen, "admin-api-listen", "127.0.0.1:0", "control plane admin API listen address")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "tenantguard demo:", err)
		return 2
	}
	opts.Logger = log
	opts.Out = stdout
	if err := demo.Run(ctx, opts); err != nil {
		fmt.Fprintln(stderr, "tenantguard demo:", err)
		return 1
	}
	return 0
}
