package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// leftOut are the import paths, by prefix, that the sidecar-only build
// must not link: the control plane, ext_authz's server and the demo, and
// what they bring (go-control-plane and the Envoy API, the xDS and CEL
// protos under it), and Kubernetes' types.
var leftOut = []string{
	"github.com/envoyproxy/",
	"github.com/cncf/xds/",
	"cel.dev/",
	"k8s.io/",
	"github.com/tenantguard/tenantguard/controlplane/",
	"github.com/tenantguard/tenantguard/extauthz/authz",
	"github.com/tenantguard/tenantguard/extauthz/api",
	"github.com/tenantguard/tenantguard/internal/controlplanesvc",
	"github.com/tenantguard/tenantguard/internal/extauthzsvc",
	"github.com/tenantguard/tenantguard/internal/demo",
}

// deps lists the packages `go build` with tags links into this command.
func deps(t *testing.T, tags string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-tags", tags, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps -tags %q: %v\n%s", tags, err, out)
	}
	return strings.Fields(string(out))
}

// TestSidecarOnlyBuildLinks: the sidecar-only build (-tags sidecar) links
// none of leftOut, and still links the data plane; the full build links
// the control plane (so the check is not vacuous).
func TestSidecarOnlyBuildLinks(t *testing.T) {
	slim := deps(t, "sidecar")
	for _, p := range slim {
		for _, prefix := range leftOut {
			if strings.HasPrefix(p, prefix) {
				t.Errorf("the sidecar-only build links %s (see `go list -deps -tags sidecar ./cmd/tenantguard`)", p)
			}
		}
	}
	for _, want := range []string{"github.com/tenantguard/tenantguard/internal/sidecar", "github.com/tenantguard/tenantguard/policy/xdsclient"} {
		if !slices.Contains(slim, want) {
			t.Errorf("the sidecar-only build does not link %s", want)
		}
	}
	// With grpcnotrace (make sidecar) nothing links text/template, whose
	// reflection on methods keeps the linker from dropping unused ones.
	for _, p := range deps(t, "sidecar,grpcnotrace") {
		if p == "golang.org/x/net/trace" || p == "text/template" {
			t.Errorf("make sidecar's build (-tags sidecar,grpcnotrace) links %s", p)
		}
	}
	full := deps(t, "")
	for _, want := range []string{"github.com/envoyproxy/go-control-plane/pkg/cache/v3", "github.com/tenantguard/tenantguard/internal/demo"} {
		if !slices.Contains(full, want) {
			t.Errorf("the full build does not link %s", want)
		}
	}
}
