package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"time"
)

// ServerFiles is a listener's `tls:` section.
type ServerFiles struct {
	// CertFile and KeyFile are the listener's certificate (with any
	// intermediates after it) and private key, PEM.
	CertFile, KeyFile string
	// ClientCAFile, if set, is the CA bundle (PEM) client certificates are
	// verified against; a client may then present one.
	ClientCAFile string
	// RequireClientCert refuses, at the handshake, clients without a
	// certificate that ClientCAFile verifies.
	RequireClientCert bool
}

// Check validates the section without loading the files.
func (f ServerFiles) Check() error {
	switch {
	case f.CertFile == "" || f.KeyFile == "":
		return errors.New("cert_file and key_file are both required")
	case f.RequireClientCert && f.ClientCAFile == "":
		return errors.New("require_client_cert needs client_ca_file, the CA that client certificates are verified against")
	}
	return nil
}

func (f ServerFiles) paths() []string {
	p := []string{f.CertFile, f.KeyFile}
	if f.ClientCAFile != "" {
		p = append(p, f.ClientCAFile)
	}
	return p
}

// Server is a listener's TLS configuration, kept current with its files.
// Its methods are safe for concurrent use.
type Server struct {
	files ServerFiles
	r     reloader[*serverState]
}

// serverState is what one load of the files gives.
type serverState struct {
	cert      *tls.Certificate
	clientCAs *x509.CertPool
	// config is the handshake configuration without NextProtos, which
	// each TLSConfig adds.
	config *tls.Config
}

// NewServer loads the files; an error (a *FileError for a file that does
// not load) is a configuration error.
func NewServer(files ServerFiles, opts Options) (*Server, error) {
	if err := files.Check(); err != nil {
		return nil, err
	}
	opts.defaults()
	s := &Server{files: files}
	s.r = reloader[*serverState]{opts: opts, paths: files.paths(), load: s.load,
		attrs: func(st *serverState) []any { return certAttrs(leafOf(st.cert)) }}
	if err := s.r.start(); err != nil {
		return nil, err
	}
	if leaf := leafOf(s.r.cur.Load().v.cert); leaf != nil && time.Now().After(leaf.NotAfter) {
		opts.Logger.Warn("tls: the certificate has expired", append([]any{"name", opts.Name, "file", files.CertFile}, certAttrs(leaf)...)...)
	}
	return s, nil
}

func (s *Server) load() (*serverState, error) {
	cert, err := loadKeyPair("cert_file", s.files.CertFile, "key_file", s.files.KeyFile)
	if err != nil {
		return nil, err
	}
	st := &serverState{cert: cert}
	st.config = &tls.Config{MinVersion: MinVersion, Certificates: []tls.Certificate{*cert}}
	if s.files.ClientCAFile != "" {
		if st.clientCAs, err = loadPool("client_ca_file", s.files.ClientCAFile); err != nil {
			return nil, err
		}
		st.config.ClientCAs = st.clientCAs
		st.config.ClientAuth = tls.VerifyClientCertIfGiven
		// A resumed session skips verification: its client would keep an
		// identity verified under client CAs since replaced.
		st.config.SessionTicketsDisabled = true
		if s.files.RequireClientCert {
			st.config.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return st, nil
}

// Files are the files the configuration comes from.
func (s *Server) Files() ServerFiles { return s.files }

// VerifiesClients reports whether clients may present certificates,
// which are then verified (client_ca_file is set).
func (s *Server) VerifiesClients() bool { return s.files.ClientCAFile != "" }

// Certificate returns the certificate served now.
func (s *Server) Certificate() *tls.Certificate { return s.r.get().cert }

// NotAfter is when the certificate served now expires.
func (s *Server) NotAfter() time.Time {
	if leaf := leafOf(s.Certificate()); leaf != nil {
		return leaf.NotAfter
	}
	return time.Time{}
}

// TLSConfig returns a configuration for a listener whose application
// protocols (ALPN) are nextProtos: "h2" for gRPC, "h2" and "http/1.1" for
// HTTP, none for PostgreSQL's SSLRequest. Every handshake gets the files'
// current certificate and client CAs.
func (s *Server) TLSConfig(nextProtos ...string) *tls.Config {
	v := &serverView{s: s, nextProtos: nextProtos}
	return &tls.Config{MinVersion: MinVersion, NextProtos: nextProtos, GetConfigForClient: v.configForClient}
}

// serverView is one TLSConfig's handshake configurations: the current
// state's, with the view's NextProtos, made once per state.
type serverView struct {
	s          *Server
	nextProtos []string
	last       atomic.Pointer[viewConfig]
}

type viewConfig struct {
	state  *serverState
	config *tls.Config
}

func (v *serverView) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	st := v.s.r.get()
	if l := v.last.Load(); l != nil && l.state == st {
		return l.config, nil
	}
	c := st.config.Clone()
	c.NextProtos = v.nextProtos
	v.last.Store(&viewConfig{state: st, config: c})
	return c, nil
}
