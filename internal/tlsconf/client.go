package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
)

// ClientFiles is a client's `tls:` section.
type ClientFiles struct {
	// CAFile is the CA bundle (PEM) the server's certificate is verified
	// against; "" uses the system's roots.
	CAFile string
	// CertFile and KeyFile, if set, are the client certificate presented
	// to servers that ask for one (mTLS).
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry; "" is
	// the host of the address dialled.
	ServerName string
	// InsecureSkipVerify accepts any server certificate: the connection is
	// encrypted but not authenticated, so anyone on the path can read it.
	// For tests and migrations only; whoever sets it logs a warning.
	InsecureSkipVerify bool
}

// Check validates the section without loading the files.
func (f ClientFiles) Check() error {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return errors.New("cert_file and key_file must be given together")
	}
	return nil
}

func (f ClientFiles) paths() []string {
	var p []string
	if f.CAFile != "" {
		p = append(p, f.CAFile)
	}
	if f.CertFile != "" {
		p = append(p, f.CertFile, f.KeyFile)
	}
	return p
}

// Client is a client's TLS configuration, kept current with its files.
// Its methods are safe for concurrent use.
type Client struct {
	files ClientFiles
	r     reloader[*clientState]
}

type clientState struct {
	cert   *tls.Certificate // nil: none to present
	config *tls.Config
}

// NewClient loads the files; an error (a *FileError for a file that does
// not load) is a configuration error.
func NewClient(files ClientFiles, opts Options) (*Client, error) {
	if err := files.Check(); err != nil {
		return nil, err
	}
	opts.defaults()
	c := &Client{files: files}
	c.r = reloader[*clientState]{opts: opts, paths: files.paths(), load: c.load,
		attrs: func(st *clientState) []any { return certAttrs(leafOf(st.cert)) }}
	if err := c.r.start(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) load() (*clientState, error) {
	st := &clientState{config: &tls.Config{MinVersion: MinVersion, ServerName: c.files.ServerName, InsecureSkipVerify: c.files.InsecureSkipVerify}}
	if c.files.CAFile != "" {
		pool, err := loadPool("ca_file", c.files.CAFile)
		if err != nil {
			return nil, err
		}
		st.config.RootCAs = pool
	}
	if c.files.CertFile != "" {
		cert, err := loadKeyPair("cert_file", c.files.CertFile, "key_file", c.files.KeyFile)
		if err != nil {
			return nil, err
		}
		st.cert = cert
		// Presented whatever CAs the server names as acceptable: the
		// server decides, and says why it refuses.
		st.config.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return st, nil
}

// Files are the files the configuration comes from.
func (c *Client) Files() ClientFiles { return c.files }

// TLSConfig returns the configuration for the next connection, from the
// files' current contents. It is shared: clone it before changing it.
// Its ServerName is empty unless the section sets server_name.
func (c *Client) TLSConfig() *tls.Config { return c.r.get().config }

// HasCertificate reports whether a client certificate is configured.
func (c *Client) HasCertificate() bool { return c.files.CertFile != "" }

// NotAfter is when the client certificate expires; zero without one.
func (c *Client) NotAfter() time.Time {
	if leaf := leafOf(c.r.get().cert); leaf != nil {
		return leaf.NotAfter
	}
	return time.Time{}
}

// DialContext connects to addr and completes a TLS handshake within ctx;
// the server name is server_name, else addr's host. It has the signature
// of go-redis' Options.Dialer.
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	cfg := c.TLSConfig()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return tc, nil
}

// TransportCredentials returns gRPC transport credentials that handshake
// with the configuration current at each connection. The server name is
// server_name, else the host of the dial target.
func (c *Client) TransportCredentials() credentials.TransportCredentials { return grpcCreds{c} }

type grpcCreds struct{ c *Client }

func (g grpcCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	// gRPC gives server_name as the authority when Info names it.
	return credentials.NewTLS(g.c.TLSConfig()).ClientHandshake(ctx, authority, raw)
}

func (grpcCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsconf: client credentials cannot serve")
}

func (g grpcCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2", ServerName: g.c.files.ServerName}
}

func (g grpcCreds) Clone() credentials.TransportCredentials { return g }

// OverrideServerName is gRPC's deprecated way to set the server name;
// the configuration's server_name is the one.
func (grpcCreds) OverrideServerName(string) error {
	return errors.New("tlsconf: set the server name in the configuration (tls.server_name)")
}

// GRPCClient returns the gRPC transport credentials of files (nil for nil
// files: plaintext) and exports the client certificate's expiry, if it
// has one, under opts.Name.
func GRPCClient(files *ClientFiles, opts Options, reg prometheus.Registerer) (credentials.TransportCredentials, error) {
	if files == nil {
		return nil, nil
	}
	c, err := NewClient(*files, opts)
	if err != nil {
		return nil, err
	}
	if c.HasCertificate() {
		if err := RegisterExpiry(reg, opts.Name, c.NotAfter); err != nil {
			return nil, err
		}
	}
	return c.TransportCredentials(), nil
}
