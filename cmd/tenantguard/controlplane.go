package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/controlplanesvc"
)

func runControlPlane(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "tenantguard controlplane: --config FILE is required")
		return 2
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "tenantguard controlplane:", err)
		return 2
	}
	cfg, err := config.LoadControlPlane(*path)
	if err != nil {
		fmt.Fprintln(stderr, "tenantguard controlplane: config error:", err)
		return 1
	}
	svc, err := controlplanesvc.Start(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "tenantguard controlplane:", err)
		return 1
	}
	if err := svc.Run(ctx); err != nil {
		log.Error("control plane stopped with error", "error", err)
		return 1
	}
	return 0
}
