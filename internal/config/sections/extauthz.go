package sections

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/tenantguard/tenantguard/internal/memlimit"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy"
)

// ExtAuthzFile is the ext_authz service's configuration file as written.
type ExtAuthzFile struct {
	Listen struct {
		// GRPC serves envoy.service.auth.v3.Authorization and grpc.health.v1.
		GRPC string `yaml:"grpc"`
		// HTTP serves the session API, /metrics, /healthz and /readyz.
		HTTP string `yaml:"http"`
	} `yaml:"listen"`
	// TLS of each listener; a listener without a section is plaintext.
	TLS struct {
		GRPC *ListenerTLSFile `yaml:"grpc"`
		HTTP *ListenerTLSFile `yaml:"http"`
	} `yaml:"tls"`
	// AdminToken (or AdminTokenFile) is the bearer token the session API
	// requires.
	AdminToken     string       `yaml:"admin_token"`
	AdminTokenFile string       `yaml:"admin_token_file"`
	Sessions       SessionsFile `yaml:"sessions"`
	// Tenants lists the tenant ids sessions may be issued for; with a
	// controlplane section they come from the policy instead.
	Tenants      []string                `yaml:"tenants"`
	ControlPlane *ControlPlaneClientFile `yaml:"controlplane"`
	DrainTimeout Duration                `yaml:"drain_timeout"`
	// MemoryLimit is the Go runtime's soft memory limit for the
	// `tenantguard extauthz` process ("384MiB", "1GiB", "none"); by
	// default 90% of the container's memory limit, none outside a
	// container. GOMEMLIMIT in the environment wins. See internal/memlimit.
	MemoryLimit string `yaml:"memory_limit"`
}

// ExtAuthz is the compiled ext_authz configuration.
type ExtAuthz struct {
	GRPCListen, HTTPListen string
	// GRPCTLS and HTTPTLS are the listeners' TLS; nil: plaintext.
	GRPCTLS, HTTPTLS *tlsconf.ServerFiles
	AdminToken       string
	Sessions         *Sessions
	Tenants          map[string]bool
	ControlPlane     *ControlPlaneClient // nil: tenants from this file
	DrainTimeout     Duration
	// MemoryLimit: 0 = the default (internal/memlimit), memlimit.Unlimited
	// = none, else bytes.
	MemoryLimit int64
}

// minMemoryLimit is the smallest memory_limit taken: the service's heap in
// use is about 5 MiB idle and 10 MiB under bench/extauthz.sh's cached
// load, and a soft limit near the live heap makes the collector run
// nearly continuously (a 20 MiB limit cost a third more CPU per check).
const minMemoryLimit = 32 << 20

// LoadExtAuthz reads and validates the ext_authz configuration at path.
func LoadExtAuthz(path string) (*ExtAuthz, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return ParseExtAuthz(path, data)
}

// ParseExtAuthz validates configuration text; name is used in errors and
// its directory resolves relative key paths.
func ParseExtAuthz(name string, data []byte) (*ExtAuthz, error) {
	var f ExtAuthzFile
	if err := DecodeStrict(name, data, &f); err != nil {
		return nil, err
	}
	fail := func(field, format string, args ...any) (*ExtAuthz, error) {
		return nil, &Error{File: name, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	out := &ExtAuthz{GRPCListen: f.Listen.GRPC, HTTPListen: f.Listen.HTTP, Tenants: map[string]bool{}, DrainTimeout: f.DrainTimeout}
	if out.DrainTimeout == 0 {
		out.DrainTimeout = Duration(10e9)
	}
	for field, addr := range map[string]string{"listen.grpc": f.Listen.GRPC, "listen.http": f.Listen.HTTP} {
		if addr == "" {
			return fail(field, "required (host:port)")
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fail(field, "%q is not host:port: %v", addr, err)
		}
	}
	tok, ferr := ReadToken(filepath.Dir(name), "admin_token", f.AdminToken, f.AdminTokenFile, true)
	if ferr != nil {
		return fail(ferr.Field, "%s", ferr.Msg)
	}
	if out.GRPCTLS, ferr = ParseListenerTLS(f.TLS.GRPC, filepath.Dir(name), "tls.grpc"); ferr != nil {
		return fail(ferr.Field, "%s", ferr.Msg)
	}
	if out.HTTPTLS, ferr = ParseListenerTLS(f.TLS.HTTP, filepath.Dir(name), "tls.http"); ferr != nil {
		return fail(ferr.Field, "%s", ferr.Msg)
	}
	out.AdminToken = tok
	s, ferr := ParseSessions(&f.Sessions, filepath.Dir(name), true)
	if ferr != nil {
		return fail(ferr.Field, "%s", ferr.Msg)
	}
	out.Sessions = s
	var err error
	if out.MemoryLimit, err = memlimit.Parse(f.MemoryLimit); err != nil {
		return fail("memory_limit", "%v", err)
	}
	if out.MemoryLimit > 0 && out.MemoryLimit < minMemoryLimit {
		return fail("memory_limit", "%d bytes is below %d MiB: the collector would run nearly all the time (or none for no limit)", out.MemoryLimit, minMemoryLimit>>20)
	}
	if f.ControlPlane != nil {
		cp, ferr := ParseControlPlaneClient(f.ControlPlane, filepath.Dir(name), "extauthz")
		if ferr != nil {
			return fail(ferr.Field, "%s", ferr.Msg)
		}
		out.ControlPlane = cp
	} else if len(f.Tenants) == 0 {
		return fail("tenants", "at least one tenant id is required (or a controlplane section to take them from)")
	}
	for i, t := range f.Tenants {
		if !policy.ValidTenantID(t) {
			return fail(fmt.Sprintf("tenants[%d]", i), "%q is not a valid tenant id", t)
		}
		out.Tenants[t] = true
	}
	return out, nil
}
