//go:build extauthz

// The ext_authz-only build (go build -tags extauthz ./cmd/tenantguard,
// make extauthz) links only the ext_authz service: extauthz, extauthz
// keygen and version. The data planes (proxy/pg with pg_query_go, which is
// cgo and large, proxy/redis), the control plane with go-control-plane's
// server and the injector with Kubernetes' types are left out: their code
// and package initialisation would be resident in every ext_authz process
// (issue 11: RSS ≤ 40 MiB). It cannot be combined with -tags sidecar.

package main

import (
	"context"
	"fmt"
	"io"
)

// buildNote follows the version in `tenantguard version`.
const buildNote = " (ext_authz-only build)"

// notInExtAuthzBuild refuses a subcommand the ext_authz-only build leaves
// out; exit code 2, as for an unknown command.
func notInExtAuthzBuild(cmd string, stderr io.Writer) int {
	fmt.Fprintf(stderr, "tenantguard: %q is not in this build: this is the ext_authz-only build (go build -tags extauthz), which has extauthz, extauthz keygen and version; use the full tenantguard binary\n", cmd)
	return 2
}

func runSidecar(_ context.Context, _ []string, stderr io.Writer) int {
	return notInExtAuthzBuild("sidecar", stderr)
}

func runPG(_ context.Context, _ []string, _, stderr io.Writer) int {
	return notInExtAuthzBuild("pg", stderr)
}

func runControlPlane(_ context.Context, _ []string, _, stderr io.Writer) int {
	return notInExtAuthzBuild("controlplane", stderr)
}

func runDemo(_ context.Context, _ []string, _, stderr io.Writer) int {
	return notInExtAuthzBuild("demo", stderr)
}

func runInject(_ context.Context, _ []string, _ io.Reader, _, stderr io.Writer) int {
	return notInExtAuthzBuild("inject", stderr)
}

func runInjector(_ context.Context, _ []string, stderr io.Writer) int {
	return notInExtAuthzBuild("injector", stderr)
}

func runTenant(_ context.Context, _ []string, _, stderr io.Writer) int {
	return notInExtAuthzBuild("tenant", stderr)
}
