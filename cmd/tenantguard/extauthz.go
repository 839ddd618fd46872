//go:build !sidecar

package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/tenantguard/tenantguard/internal/config/sections"
	"github.com/tenantguard/tenantguard/internal/extauthzsvc"
)

func runExtAuthz(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "keygen" {
		return runKeygen(args[1:], stdout, stderr)
	}
	return runService(ctx, "extauthz", args, stderr, sections.LoadExtAuthz,
		func(ctx context.Context, cfg *sections.ExtAuthz, log *slog.Logger) (runner, error) {
			return extauthzsvc.Start(ctx, cfg, log)
		})
}
