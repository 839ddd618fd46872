// Package tlsconf builds the TLS configuration of every tenantguard
// listener and client from certificate files, and keeps it current: the
// files are checked for changes (at most every CheckInterval, when a
// handshake needs them) and re-read when they change, so that a renewed
// certificate (cert-manager, a rotated Secret) is served from the next
// handshake on, without a restart. Connections already open keep the
// certificate they were set up with. A pair that fails to load (a key
// that does not match, a half-written file) is logged and the one in use
// is kept.
//
// Every configuration has TLS 1.2 as its minimum (1.3 is preferred, as Go
// does by default) and leaves the key exchanges to Go's defaults, which
// offer the hybrid post-quantum X25519MLKEM768 first and X25519 and the
// NIST curves after it: a peer that does not know the hybrid still
// connects. (Setting CurvePreferences could only remove groups: Go orders
// them itself. GODEBUG=tlsmlkem=0 would turn the hybrid off.)
package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// MinVersion is the lowest TLS version any configuration accepts.
const MinVersion = tls.VersionTLS12

// DefaultCheckInterval is how often, at most, the files are checked for
// changes.
const DefaultCheckInterval = time.Second

// Options configure a Server or Client.
type Options struct {
	// Name identifies the configuration in logs and metrics: "postgres",
	// "xds", "controlplane client"…
	Name string
	// Logger receives reloads and failed reloads; nil discards them.
	Logger *slog.Logger
	// CheckInterval bounds how often the files are checked for changes;
	// 0 means DefaultCheckInterval, a negative value checks at every
	// handshake.
	CheckInterval time.Duration
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = DefaultCheckInterval
	}
}

// FileError is a file of a TLS section that cannot be used: Field is the
// section's field naming it (cert_file, key_file, client_ca_file,
// ca_file), Path the file.
type FileError struct {
	Field string
	Path  string
	Err   error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s %s: %v", e.Field, e.Path, e.Err) }

func (e *FileError) Unwrap() error { return e.Err }

// loadKeyPair reads a certificate chain and its private key (PEM). Errors
// say which of the two files is at fault.
func loadKeyPair(certField, certFile, keyField, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, &FileError{certField, certFile, err}
	}
	if _, err := parseCerts(certPEM); err != nil {
		return nil, &FileError{certField, certFile, err}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, &FileError{keyField, keyFile, err}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &FileError{keyField, keyFile, err}
	}
	return &pair, nil
}

// loadPool reads a CA bundle (PEM, one or more certificates).
func loadPool(field, path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{field, path, err}
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, &FileError{field, path, err}
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// parseCerts parses every CERTIFICATE block of a PEM file; it needs one
// at least, and refuses a block that does not parse.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := bytes.TrimSpace(data); len(rest) > 0; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return out, nil
}

// fileStamp tells whether a file may have changed since it was read
// without reading it: a replacement renamed into place (as Kubernetes
// updates a mounted Secret, by swapping a symlink) is another file; a
// rewrite in place changes the size or the modification time.
type fileStamp struct {
	fi os.FileInfo
}

func stampFiles(paths []string) ([]fileStamp, error) {
	out := make([]fileStamp, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out[i] = fileStamp{fi}
	}
	return out, nil
}

func sameStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i].fi, b[i].fi
		if !os.SameFile(x, y) || !x.ModTime().Equal(y.ModTime()) || x.Size() != y.Size() {
			return false
		}
	}
	return true
}

// leafOf is the certificate a pair presents (parsed by tls.X509KeyPair).
func leafOf(c *tls.Certificate) *x509.Certificate {
	if c == nil {
		return nil
	}
	return c.Leaf
}

// certAttrs are a certificate's log attributes.
func certAttrs(c *x509.Certificate) []any {
	if c == nil {
		return nil
	}
	return []any{"subject", c.Subject.String(), "serial", c.SerialNumber.Text(16),
		"not_after", c.NotAfter.UTC().Format(time.RFC3339)}
}
