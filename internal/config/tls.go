package config

import (
	"errors"

	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// ListenerTLSFile is a listener's `tls:` section, the same in every
// configuration file. Relative paths resolve against the file's
// directory. The files are re-read when they change.
type ListenerTLSFile struct {
	// CertFile and KeyFile: the listener's certificate (intermediates
	// after it) and private key, PEM.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, if set, lets clients present a certificate, verified
	// against this CA bundle.
	ClientCAFile string `yaml:"client_ca_file"`
	// RequireClientCert refuses clients without such a certificate.
	RequireClientCert bool `yaml:"require_client_cert"`
}

// RedisTLSFile is the Redis listener's `tls:` section: a listener's, and
// whether plaintext clients are still served on the same port.
type RedisTLSFile struct {
	ListenerTLSFile `yaml:",inline"`
	// AllowPlaintext serves clients that do not start a TLS handshake in
	// plaintext too; by default they are refused.
	AllowPlaintext bool `yaml:"allow_plaintext"`
}

// parseRedisTLS compiles redis.tls.
func parseRedisTLS(f *File, out *Sidecar, base string) *fieldErr {
	t := f.Redis.TLS
	if t == nil {
		return nil
	}
	if out.RedisListen == "" {
		return failf("redis.tls", "there is no Redis listener (listen.redis)")
	}
	files, fe := parseListenerTLS(&t.ListenerTLSFile, base, "redis.tls")
	if fe != nil {
		return fe
	}
	if files == nil && t.AllowPlaintext {
		return failf("redis.tls.allow_plaintext", "needs cert_file and key_file: without them the listener is plaintext only")
	}
	out.RedisTLS = files
	out.Redis.AllowPlaintext = t.AllowPlaintext
	return nil
}

// ClientTLSFile is a client's `tls:` section (to the control plane, to
// the session store), the same in every configuration file.
type ClientTLSFile struct {
	// CAFile verifies the server's certificate; "" uses the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile, if set, are presented when the server asks
	// for a client certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the server's certificate must carry; default
	// the host of the address.
	ServerName string `yaml:"server_name"`
}

// parseListenerTLS compiles a listener's section (nil: no TLS) and loads
// its files once, so that a file that does not load fails the
// configuration; field is the section's name in errors ("tls",
// "tls.xds").
func parseListenerTLS(f *ListenerTLSFile, base, field string) (*tlsconf.ServerFiles, *fieldErr) {
	if f == nil {
		return nil, nil
	}
	files := tlsconf.ServerFiles{CertFile: f.CertFile, KeyFile: f.KeyFile, RequireClientCert: f.RequireClientCert}
	switch {
	case f.CertFile == "" && f.KeyFile == "" && (f.ClientCAFile != "" || f.RequireClientCert):
		return nil, failf(field, "client certificates need the listener's own: cert_file and key_file")
	case f.CertFile == "" && f.KeyFile == "":
		return nil, nil // an empty section: no TLS
	case f.CertFile == "" || f.KeyFile == "":
		return nil, failf(field, "cert_file and key_file must be given together")
	}
	files.CertFile, files.KeyFile = resolve(base, f.CertFile), resolve(base, f.KeyFile)
	if f.ClientCAFile != "" {
		files.ClientCAFile = resolve(base, f.ClientCAFile)
	}
	if _, err := tlsconf.NewServer(files, tlsconf.Options{}); err != nil {
		return nil, tlsFieldErr(field, err)
	}
	return &files, nil
}

// parseClientTLS compiles a client's section (nil: no TLS) and loads its
// files once.
func parseClientTLS(f *ClientTLSFile, base, field string) (*tlsconf.ClientFiles, *fieldErr) {
	if f == nil {
		return nil, nil
	}
	files := tlsconf.ClientFiles{ServerName: f.ServerName}
	for _, p := range []struct {
		in  string
		out *string
	}{{f.CAFile, &files.CAFile}, {f.CertFile, &files.CertFile}, {f.KeyFile, &files.KeyFile}} {
		if p.in != "" {
			*p.out = resolve(base, p.in)
		}
	}
	if _, err := tlsconf.NewClient(files, tlsconf.Options{}); err != nil {
		return nil, tlsFieldErr(field, err)
	}
	return &files, nil
}

// tlsFieldErr names the file's field in the section, or the section.
func tlsFieldErr(field string, err error) *fieldErr {
	var fe *tlsconf.FileError
	if errors.As(err, &fe) {
		return failf(field+"."+fe.Field, "%s: %v", fe.Path, fe.Err)
	}
	return failf(field, "%v", err)
}
