//go:build sidecar

// The sidecar-only build (go build -tags sidecar ./cmd/tenantguard, make
// sidecar) links only the data plane: sidecar, pg bootstrap/check, extauthz
// keygen and version. The control plane, ext_authz and the demo link
// go-control-plane, the Envoy API and their dependencies, whose package
// initialisation alone keeps several MiB of the binary resident in every
// process of it, whichever subcommand it runs; an injected sidecar never
// runs them.

package main

import (
	"context"
	"fmt"
	"io"
)

// buildNote follows the version in `tenantguard version`.
const buildNote = " (sidecar-only build)"

func runExtAuthz(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "keygen" {
		return runKeygen(args[1:], stdout, stderr)
	}
	return notInThisBuild("extauthz", stderr)
}

func runControlPlane(_ context.Context, _ []string, _, stderr io.Writer) int {
	return notInThisBuild("controlplane", stderr)
}

func runDemo(_ context.Context, _ []string, _, stderr io.Writer) int {
	return notInThisBuild("demo", stderr)
}

// notInThisBuild refuses a subcommand the sidecar-only build leaves out;
// exit code 2, as for an unknown command.
func notInThisBuild(cmd string, stderr io.Writer) int {
	fmt.Fprintf(stderr, "tenantguard: %q is not in this build: this is the sidecar-only build (go build -tags sidecar), which has sidecar, pg, extauthz keygen and version; use the full tenantguard binary\n", cmd)
	return 2
}

func runInject(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "wait" {
		return runInjectWait(ctx, args[1:], stderr) // the fallback layout's hooks run in the sidecar
	}
	return notInThisBuild("inject", stderr)
}

func runInjector(_ context.Context, _ []string, stderr io.Writer) int {
	return notInThisBuild("injector", stderr)
}

func runTenant(_ context.Context, _ []string, _, stderr io.Writer) int {
	return notInThisBuild("tenant", stderr)
}
