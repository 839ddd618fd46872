package main

import (
	"slices"
	"strings"
	"testing"
)

// extAuthzLeftOut are the import paths, by prefix, that the ext_authz-only
// build must not link: the data planes (pg_query_go is cgo and large) and
// their configuration, the control plane and go-control-plane's server
// side, the injector and Kubernetes' types, the demo.
var extAuthzLeftOut = []string{
	"github.com/pganalyze/",
	"github.com/jackc/pgx/",
	"github.com/tenantguard/tenantguard/proxy/",
	"github.com/tenantguard/tenantguard/wire/pg",
	"github.com/tenantguard/tenantguard/wire/resp",
	"github.com/tenantguard/tenantguard/internal/config", // but internal/config/sections, below
	"github.com/tenantguard/tenantguard/internal/sidecar",
	"github.com/tenantguard/tenantguard/controlplane/",
	"github.com/tenantguard/tenantguard/internal/controlplanesvc",
	"github.com/tenantguard/tenantguard/internal/demo",
	"github.com/tenantguard/tenantguard/internal/inject",
	"github.com/envoyproxy/go-control-plane/pkg/",
	"k8s.io/",
	"cel.dev/",
	"golang.org/x/net/trace",
	"text/template",
}

// TestExtAuthzOnlyBuildLinks: make extauthz's build (-tags
// extauthz,grpcnotrace) links none of extAuthzLeftOut and still links the
// ext_authz service; the full build links pg_query_go (so the check is not
// vacuous).
func TestExtAuthzOnlyBuildLinks(t *testing.T) {
	slim := deps(t, "extauthz,grpcnotrace")
	for _, p := range slim {
		if p == "github.com/tenantguard/tenantguard/internal/config/sections" {
			continue
		}
		for _, prefix := range extAuthzLeftOut {
			if strings.HasPrefix(p, prefix) {
				t.Errorf("the ext_authz-only build links %s (see `go list -deps -tags extauthz,grpcnotrace ./cmd/tenantguard`)", p)
			}
		}
	}
	for _, want := range []string{"github.com/tenantguard/tenantguard/internal/extauthzsvc", "github.com/tenantguard/tenantguard/internal/config/sections"} {
		if !slices.Contains(slim, want) {
			t.Errorf("the ext_authz-only build does not link %s", want)
		}
	}
	full := deps(t, "")
	for _, want := range []string{"github.com/pganalyze/pg_query_go/v6", "github.com/tenantguard/tenantguard/proxy/pg", "github.com/tenantguard/tenantguard/internal/extauthzsvc"} {
		if !slices.Contains(full, want) {
			t.Errorf("the full build does not link %s", want)
		}
	}
}
