//go:build !sidecar

package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// ControlPlaneFile is the control plane's configuration file as written.
type ControlPlaneFile struct {
	Listen struct {
		// XDS serves ADS (state of the world and delta) to sidecars,
		// ext_authz instances and Envoy.
		XDS string `yaml:"xds"`
		// Admin serves the admin API, /metrics, /healthz and /readyz.
		Admin string `yaml:"admin"`
	} `yaml:"listen"`
	// TLS of each listener; a listener without a section is plaintext.
	TLS struct {
		// XDS: with client_ca_file, data planes may authenticate with a
		// client certificate (instead of, or besides, xds_token), and the
		// node id they claim must be the certificate's identity.
		XDS *XDSTLSFile `yaml:"xds"`
		// Admin: the admin API still needs the admin token.
		Admin *ListenerTLSFile `yaml:"admin"`
	} `yaml:"tls"`
	// Database is the PostgreSQL URL of the policy store.
	Database       string `yaml:"database"`
	AdminToken     string `yaml:"admin_token"`
	AdminTokenFile string `yaml:"admin_token_file"`
	// XDSToken (or XDSTokenFile), if set, is the bearer token every xDS
	// client must present: the policy carries every tenant's verifiers.
	XDSToken     string `yaml:"xds_token"`
	XDSTokenFile string `yaml:"xds_token_file"`
	// Seed is a policy file or directory (YAML or JSON), loaded only when
	// the store is empty (first start).
	Seed string `yaml:"seed"`
	// Envoy, if present, adds a Listener and Clusters that put ext_authz
	// in front of an app, for Envoys that take config from this server.
	Envoy *struct {
		Listen   string `yaml:"listen"`
		App      string `yaml:"app"`
		ExtAuthz string `yaml:"extauthz"`
		// ExtAuthzTLS, if present, makes Envoy call ext_authz over TLS;
		// its files are paths on Envoy's file system, which the control
		// plane does not read.
		ExtAuthzTLS *ClientTLSFile `yaml:"extauthz_tls"`
	} `yaml:"envoy"`
	DrainTimeout Duration `yaml:"drain_timeout"`

	// AuditKeyFile is the Ed25519 private key (PKCS #8 PEM: `tenantguard
	// controlplane auditkey`, or openssl genpkey -algorithm ed25519) the
	// control plane signs audit entries with, so that whoever can write to
	// the database cannot rewrite history unnoticed. Keep it out of the
	// database's reach; others may not read it.
	AuditKeyFile string `yaml:"audit_key_file"`
	// AuditVerificationKeys are public key files (PEM, one or more keys
	// each) of the keys entries may also be signed with: earlier signing
	// keys, and during a rotation the other control planes' new one.
	AuditVerificationKeys []string `yaml:"audit_verification_keys"`
	// AuditSignedFrom, if set, is the seq from which every audit entry
	// must be signed (GET /v1/audit's keyed_from_seq after an upgrade; 1
	// for a store keyed from the start).
	AuditSignedFrom int64 `yaml:"audit_signed_from"`
	// AuditCheckInterval (default 5m) and AuditFullCheckInterval (default
	// 1h) are how often the chain is verified from the last verified
	// entry, and from its first.
	AuditCheckInterval     Duration `yaml:"audit_check_interval"`
	AuditFullCheckInterval Duration `yaml:"audit_full_check_interval"`

	// Lifecycle configures the tenant lifecycle operations (lifecycle.go).
	Lifecycle LifecycleFile `yaml:"lifecycle"`
}

// XDSTLSFile is the xDS listener's `tls:` section: a listener's, and the
// trust domain of the SPIFFE ids that name nodes.
type XDSTLSFile struct {
	ListenerTLSFile `yaml:",inline"`
	// TrustDomain, if set, is the only SPIFFE trust domain whose ids
	// (spiffe://<trust_domain>/ns/<namespace>/pod/<name>) name nodes.
	TrustDomain string `yaml:"trust_domain"`
}

// Defaults of the audit schedules.
const (
	DefaultAuditCheckInterval     = 5 * time.Minute
	DefaultAuditFullCheckInterval = time.Hour
)

// ControlPlaneAudit is the compiled audit settings.
type ControlPlaneAudit struct {
	SigningKey        *auditkey.SigningKey // nil: entries are not signed
	VerificationKeys  []*auditkey.VerificationKey
	SignedFrom        int64
	CheckInterval     time.Duration
	FullCheckInterval time.Duration
}

// ControlPlane is the compiled control-plane configuration.
type ControlPlane struct {
	XDSListen, AdminListen string
	Database               string
	AdminToken             string
	XDSToken               string // "" = xDS clients are not authenticated by token
	// XDSTLS and AdminTLS are the listeners' TLS; nil: plaintext.
	XDSTLS, AdminTLS *tlsconf.ServerFiles
	// XDSTrustDomain restricts the SPIFFE ids that name nodes; "" = any.
	XDSTrustDomain string
	Seed           string // "" = none
	// Envoy addresses, host:port each; nil when Envoy resources are off.
	Envoy        *EnvoyAddrs
	DrainTimeout Duration
	Audit        ControlPlaneAudit
	Lifecycle    Lifecycle
}

// EnvoyAddrs are the addresses the Envoy resources name.
type EnvoyAddrs struct {
	Listen, App, ExtAuthz string
	// ExtAuthzTLS: nil, plaintext; else paths on Envoy's file system.
	ExtAuthzTLS *tlsconf.ClientFiles
}

// LoadControlPlane reads and validates the control plane's configuration.
func LoadControlPlane(path string) (*ControlPlane, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return ParseControlPlane(path, data)
}

// ParseControlPlane validates configuration text; name is used in errors
// and its directory resolves relative paths.
func ParseControlPlane(name string, data []byte) (*ControlPlane, error) {
	var f ControlPlaneFile
	if err := decodeStrict(name, data, &f); err != nil {
		return nil, err
	}
	fail := func(field, format string, args ...any) (*ControlPlane, error) {
		return nil, &Error{File: name, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	out := &ControlPlane{XDSListen: f.Listen.XDS, AdminListen: f.Listen.Admin, Database: f.Database, DrainTimeout: f.DrainTimeout}
	if out.DrainTimeout == 0 {
		out.DrainTimeout = Duration(10e9)
	}
	for _, a := range []struct{ field, addr string }{{"listen.xds", f.Listen.XDS}, {"listen.admin", f.Listen.Admin}} {
		if a.addr == "" {
			return fail(a.field, "required (host:port)")
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fail(a.field, "%q is not host:port: %v", a.addr, err)
		}
	}
	if !strings.HasPrefix(f.Database, "postgres://") && !strings.HasPrefix(f.Database, "postgresql://") {
		return fail("database", "required: a postgres:// URL of the policy store")
	}
	base := filepath.Dir(name)
	var ferr *fieldErr
	if out.AdminToken, ferr = readToken(base, "admin_token", f.AdminToken, f.AdminTokenFile, true); ferr != nil {
		return fail(ferr.field, "%s", ferr.msg)
	}
	tok, ferr := readToken(base, "xds_token", f.XDSToken, f.XDSTokenFile, false)
	if ferr != nil {
		return fail(ferr.field, "%s", ferr.msg)
	}
	out.XDSToken = tok
	if x := f.TLS.XDS; x != nil {
		if out.XDSTLS, ferr = parseListenerTLS(&x.ListenerTLSFile, base, "tls.xds"); ferr != nil {
			return fail(ferr.field, "%s", ferr.msg)
		}
		if x.TrustDomain != "" && !validTrustDomain(x.TrustDomain) {
			return fail("tls.xds.trust_domain", "%q is not a SPIFFE trust domain (lower-case letters, digits, '.', '-', '_')", x.TrustDomain)
		}
		out.XDSTrustDomain = x.TrustDomain
	}
	if out.AdminTLS, ferr = parseListenerTLS(f.TLS.Admin, base, "tls.admin"); ferr != nil {
		return fail(ferr.field, "%s", ferr.msg)
	}
	if f.Seed != "" {
		out.Seed = resolve(base, f.Seed)
		if _, err := os.Stat(out.Seed); err != nil {
			return fail("seed", "%v", err)
		}
	}
	if e := f.Envoy; e != nil {
		for _, a := range []struct{ field, addr string }{{"envoy.listen", e.Listen}, {"envoy.app", e.App}, {"envoy.extauthz", e.ExtAuthz}} {
			if _, _, err := net.SplitHostPort(a.addr); err != nil {
				return fail(a.field, "required host:port: %v", err)
			}
		}
		out.Envoy = &EnvoyAddrs{Listen: e.Listen, App: e.App, ExtAuthz: e.ExtAuthz}
		if t := e.ExtAuthzTLS; t != nil {
			switch {
			case t.CAFile == "":
				return fail("envoy.extauthz_tls.ca_file", "required: the CA that ext_authz's certificate is verified with, on Envoy's file system")
			case t.ServerName == "":
				return fail("envoy.extauthz_tls.server_name", "required: the DNS name of ext_authz's certificate (SNI)")
			case (t.CertFile == "") != (t.KeyFile == ""):
				return fail("envoy.extauthz_tls", "cert_file and key_file must be given together")
			}
			out.Envoy.ExtAuthzTLS = &tlsconf.ClientFiles{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName}
		}
	}
	if out.Audit, ferr = parseControlPlaneAudit(&f, base); ferr != nil {
		return fail(ferr.field, "%s", ferr.msg)
	}
	if out.Lifecycle, ferr = parseLifecycle(&f.Lifecycle, base); ferr != nil {
		return fail(ferr.field, "%s", ferr.msg)
	}
	return out, nil
}

// validTrustDomain follows the SPIFFE ID specification, §2.1.
func validTrustDomain(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return s != "" && len(s) <= 255
}

// parseControlPlaneAudit reads the audit keys and schedules; base
// resolves relative paths.
func parseControlPlaneAudit(f *ControlPlaneFile, base string) (ControlPlaneAudit, *fieldErr) {
	out := ControlPlaneAudit{SignedFrom: f.AuditSignedFrom,
		CheckInterval: time.Duration(f.AuditCheckInterval), FullCheckInterval: time.Duration(f.AuditFullCheckInterval)}
	if f.AuditKeyFile != "" {
		path := resolve(base, f.AuditKeyFile)
		fi, err := os.Stat(path)
		if err != nil {
			return out, &fieldErr{"audit_key_file", err.Error()}
		}
		if perm := fi.Mode().Perm(); perm&0o007 != 0 {
			return out, &fieldErr{"audit_key_file", fmt.Sprintf("%s is accessible to others (mode %#o): chmod 600 (or 640 with a group only the control plane is in)", path, perm)}
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return out, &fieldErr{"audit_key_file", err.Error()}
		}
		if out.SigningKey, err = auditkey.ParseSigningKey(data); err != nil {
			return out, &fieldErr{"audit_key_file", fmt.Sprintf("%s: %v", path, err)}
		}
	}
	for i, p := range f.AuditVerificationKeys {
		field := fmt.Sprintf("audit_verification_keys[%d]", i)
		data, err := os.ReadFile(resolve(base, p))
		if err != nil {
			return out, &fieldErr{field, err.Error()}
		}
		keys, err := auditkey.ParseVerificationKeys(data)
		if err != nil {
			return out, &fieldErr{field, err.Error()}
		}
		out.VerificationKeys = append(out.VerificationKeys, keys...)
	}
	switch {
	case out.SignedFrom < 0:
		return out, &fieldErr{"audit_signed_from", "must be a seq (1 or more)"}
	case out.SignedFrom > 0 && out.SigningKey == nil && len(out.VerificationKeys) == 0:
		return out, &fieldErr{"audit_signed_from", "needs audit_key_file or audit_verification_keys to check the signatures with"}
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{{"audit_check_interval", &out.CheckInterval, DefaultAuditCheckInterval}, {"audit_full_check_interval", &out.FullCheckInterval, DefaultAuditFullCheckInterval}} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < time.Second:
			return out, &fieldErr{d.field, "must be at least 1s"}
		}
	}
	return out, nil
}
