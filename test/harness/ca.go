package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throwaway certificate authority for tests: it signs server and
// client certificates written as PEM files. Nothing of it outlives the
// test that made it.
type CA struct {
	// File is the CA certificate, PEM: a client's ca_file, a server's
	// client_ca_file.
	File string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA named name and writes its certificate into a new
// t.TempDir().
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"tenantguard test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("harness: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{File: filepath.Join(t.TempDir(), "ca.pem"), cert: cert, key: key}
	writePEM(t, ca.File, "CERTIFICATE", der, 0o644)
	return ca
}

// Pool is a pool holding the CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// CertSpec is what a certificate Issue makes names.
type CertSpec struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []string // e.g. spiffe://cluster.local/ns/shop/pod/orders-1
	// NotAfter defaults to a day from now.
	NotAfter time.Time
}

// ServerSpec names 127.0.0.1, ::1 and localhost.
func ServerSpec(cn string) CertSpec {
	return CertSpec{CommonName: cn, DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}
}

// Issue signs a certificate for spec (usable by servers and clients
// alike) with a new P-256 key, and writes the certificate and the key
// (mode 0600) as dir/name.crt and dir/name.key, replacing them by rename
// so that a reader never sees half a file.
func (ca *CA) Issue(t testing.TB, dir, name string, spec CertSpec) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: []string{"tenantguard test"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     spec.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
	for _, u := range spec.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatalf("harness: URI SAN %q: %v", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("harness: issue %s: %v", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{{certFile, "CERTIFICATE", der, 0o644}, {keyFile, "PRIVATE KEY", keyDER, 0o600}} {
		tmp := f.path + ".tmp"
		writePEM(t, tmp, f.typ, f.der, f.mode)
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("harness: generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("harness: serial number: %v", err)
	}
	return n
}
