//go:build !sidecar && !extauthz

package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/controlplanesvc"
)

func runControlPlane(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "auditkey" {
		return runAuditKey(args[1:], stdout, stderr)
	}
	return runService(ctx, "controlplane", args, stderr, config.LoadControlPlane,
		func(ctx context.Context, cfg *config.ControlPlane, log *slog.Logger) (runner, error) {
			return controlplanesvc.Start(ctx, cfg, log)
		})
}
