//go:build !sidecar

package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/controlplanesvc"
)

func runControlPlane(ctx context.Context, args []string, stderr io.Writer) int {
	return runService(ctx, "controlplane", args, stderr, config.LoadControlPlane,
		func(ctx context.Context, cfg *config.ControlPlane, log *slog.Logger) (runner, error) {
			return controlplanesvc.Start(ctx, cfg, log)
		})
}
