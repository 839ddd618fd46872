package sections

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

// ParseListenerTLS compiles a listener's section (nil: no TLS) and loads
// its files once, so that a file that does not load fails the
// configuration; field is the section's name in errors ("tls",
// "tls.xds").
func ParseListenerTLS(f *ListenerTLSFile, base, field string) (*tlsconf.ServerFiles, *FieldError) {
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
	files.CertFile, files.KeyFile = Resolve(base, f.CertFile), Resolve(base, f.KeyFile)
	if f.ClientCAFile != "" {
		files.ClientCAFile = Resolve(base, f.ClientCAFile)
	}
	if _, err := tlsconf.NewServer(files, tlsconf.Options{}); err != nil {
		return nil, tlsFieldErr(field, err)
	}
	return &files, nil
}

// ParseClientTLS compiles a client's section (nil: no TLS) and loads its
// files once.
func ParseClientTLS(f *ClientTLSFile, base, field string) (*tlsconf.ClientFiles, *FieldError) {
	if f == nil {
		return nil, nil
	}
	files := tlsconf.ClientFiles{ServerName: f.ServerName}
	for _, p := range []struct {
		in  string
		out *string
	}{{f.CAFile, &files.CAFile}, {f.CertFile, &files.CertFile}, {f.KeyFile, &files.KeyFile}} {
		if p.in != "" {
			*p.out = Resolve(base, p.in)
		}
	}
	if _, err := tlsconf.NewClient(files, tlsconf.Options{}); err != nil {
		return nil, tlsFieldErr(field, err)
	}
	return &files, nil
}

// tlsFieldErr names the file's field in the section, or the section.
func tlsFieldErr(field string, err error) *FieldError {
	var fe *tlsconf.FileError
	if errors.As(err, &fe) {
		return failf(field+"."+fe.Field, "%s: %v", fe.Path, fe.Err)
	}
	return failf(field, "%v", err)
}
