//go:build !sidecar

package main

import (
	"context"
	"io"
	"os"

	"github.com/tenantguard/tenantguard/internal/tenantcli"
)

func runTenant(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return tenantcli.Run(ctx, args, tenantcli.Env{Stdout: stdout, Stderr: stderr, Terminal: isTerminal(stdout)})
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
