// Command tenantguard is the multi-tenant data-isolation gateway: one binary
// with subcommands for the sidecar, the demo and tools.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: tenantguard <command> [flags]

commands:
  sidecar --config FILE   run the data plane (PostgreSQL and Redis listeners, admin endpoint)
  extauthz --config FILE  run the session API and the Envoy ext_authz gRPC service
  extauthz keygen --id ID [--dir DIR]
                          write a new token signing key and its verification key
  controlplane --config FILE
                          run the policy store, its admin API and the xDS server
  controlplane auditkey [--out FILE]
                          write a new audit signing key (audit_key_file) and its public key
  injector --config FILE  run the mutating admission webhook that injects the sidecar
  inject -f FILE|- [-o FILE] [--config FILE] [--image IMAGE] [--native true|false]
                          add the sidecar to a manifest's workloads, as the webhook would
  demo [--env-file PATH]  run a throwaway PostgreSQL and redis-server and a sidecar with two tenants
  pg bootstrap --config FILE --admin-url URL [--policy FILE|DIR]
                          install row-level isolation in the upstream databases (every cluster of the policy)
  pg check --config FILE [--policy FILE|DIR]
                          audit the upstream role and protected tables (every cluster of the policy)
  pg fingerprint SQL      print a statement's fingerprint (for pg_cache rules) and whether it may be cached
  tenant provision|export|import|offboard|move|status|list|cancel|archive …
                          tenant lifecycle operations through the control plane's admin API
  version                 print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := stopOnSignal()
	defer stop()
	switch args[0] {
	case "sidecar":
		return runSidecar(ctx, args[1:], stderr)
	case "extauthz":
		return runExtAuthz(ctx, args[1:], stdout, stderr)
	case "controlplane":
		return runControlPlane(ctx, args[1:], stdout, stderr)
	case "injector":
		return runInjector(ctx, args[1:], stderr)
	case "inject":
		return runInject(ctx, args[1:], os.Stdin, stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "pg":
		return runPG(ctx, args[1:], stdout, stderr)
	case "tenant":
		return runTenant(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "tenantguard", version+buildNote)
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "tenantguard: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// stopOnSignal returns a context that the first SIGINT or SIGTERM ends, a
// graceful stop (a drain, bounded by its timeout); a second one ends the
// process at once, as PgBouncer's second SIGTERM does: it is raised again
// with the default action restored. Both are caught from the start, into
// a channel with room for both, so a second signal that comes before the
// first was handled is not lost (signal.NotifyContext's channel holds one:
// with GOMAXPROCS 1 a second SIGTERM sent as soon as the drain began was
// sometimes swallowed). stop releases the signals and the goroutine.
func stopOnSignal() (context.Context, func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-sigs:
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			signal.Reset(sig)
			_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		case <-done:
		}
	}()
	return ctx, func() {
		close(done)
		<-exited
		signal.Stop(sigs)
		cancel()
	}
}
