//go:build !sidecar

package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/tenantguard/tenantguard/internal/config/sections"
	"github.com/tenantguard/tenantguard/internal/extauthzsvc"
	"github.com/tenantguard/tenantguard/internal/memlimit"
)

func runExtAuthz(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "keygen" {
		return runKeygen(args[1:], stdout, stderr)
	}
	return runService(ctx, "extauthz", args, stderr, sections.LoadExtAuthz,
		func(ctx context.Context, cfg *sections.ExtAuthz, log *slog.Logger) (runner, error) {
			// The process is this service alone (the demo, which runs it
			// beside others, does not take this path): its soft memory limit.
			limit, src := memlimit.Apply(cfg.MemoryLimit)
			log.Info("memory limit", "bytes", limit, "from", string(src))
			return extauthzsvc.Start(ctx, cfg, log)
		})
}
