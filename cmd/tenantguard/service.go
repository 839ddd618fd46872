package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// runner is a started service: sidecar, ext_authz or control plane.
type runner interface{ Run(context.Context) error }

// runService is the shape of every long-running subcommand: parse
// --config and --log-level, load the configuration, start the service,
// and run it until ctx ends. Exit codes: 2 for usage, 1 for a bad
// configuration or a failure.
func runService[C any](ctx context.Context, name string, args []string, stderr io.Writer,
	load func(path string) (C, error), start func(context.Context, C, *slog.Logger) (runner, error)) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintf(stderr, "tenantguard %s: --config FILE is required\n", name)
		return 2
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintf(stderr, "tenantguard %s: %v\n", name, err)
		return 2
	}
	cfg, err := load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "tenantguard %s: config error: %v\n", name, err)
		return 1
	}
	svc, err := start(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "tenantguard %s: %v\n", name, err)
		return 1
	}
	// A drain that ran out of time still ends the process normally.
	if err := svc.Run(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Error(name+" stopped with error", "error", err)
		return 1
	}
	return 0
}
