//go:build !sidecar && !extauthz

package main

import (
	"context"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/tenantguard/tenantguard/internal/tenantcli"
)

func runTenant(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	env := tenantcli.Env{Stdout: stdout, Stderr: stderr}
	env.Terminal, env.Width = terminal(stdout)
	return tenantcli.Run(ctx, args, env)
}

// terminal reports whether w is a terminal (not merely a character
// device: /dev/null is one too), and its width.
func terminal(w io.Writer) (bool, int) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return true, 0
	}
	return true, width
}
