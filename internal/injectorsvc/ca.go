package injectorsvc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// Lifetimes of the self-managed certificates.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	leafValidity   = 365 * 24 * time.Hour
	leafRenewAfter = 335 * 24 * time.Hour // renewed 30 days before it expires
	caRenewBefore  = 365 * 24 * time.Hour // a CA with less than this left is replaced
)

// Keys of the self-managed Secret (type kubernetes.io/tls).
const (
	keyCert   = "tls.crt"
	keyKey    = "tls.key"
	keyCACert = "ca.crt"
	keyCAKey  = "ca.key"
)

// bundle is a CA and the serving certificate it signed.
type bundle struct {
	caCert, caKey, cert, key []byte // PEM
}

func (b *bundle) data() map[string][]byte {
	return map[string][]byte{keyCert: b.cert, keyKey: b.key, keyCACert: b.caCert, keyCAKey: b.caKey}
}

func bundleFrom(data map[string][]byte) *bundle {
	return &bundle{caCert: data[keyCACert], caKey: data[keyCAKey], cert: data[keyCert], key: data[keyKey]}
}

// serviceNames are the DNS names the API server may use for the service.
func serviceNames(service, namespace string) []string {
	return []string{service, service + "." + namespace, service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local"}
}

// newBundle makes a CA and a serving certificate for names. A CA already
// in b is reused when it has long enough left.
func newBundle(prev *bundle, names []string, now time.Time) (*bundle, error) {
	var caCert *x509.Certificate
	var caKey *ecdsa.PrivateKey
	out := &bundle{}
	if prev != nil {
		if c, k, err := parseCA(prev); err == nil && now.Add(caRenewBefore).Before(c.NotAfter) {
			caCert, caKey, out.caCert, out.caKey = c, k, prev.caCert, prev.caKey
		}
	}
	if caCert == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "tenantguard-injector-ca", Organization: []string{"tenantguard"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(caValidity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			return nil, err
		}
		if caCert, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
		caKey = k
		out.caCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if out.caKey, err = marshalKey(k); err != nil {
			return nil, err
		}
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(leafValidity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[len(names)-2]},
		DNSNames:     names,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	out.cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if out.key, err = marshalKey(k); err != nil {
		return nil, err
	}
	return out, nil
}

// check parses b and reports why it must be renewed ("" when it is
// good), with the serving certificate to use meanwhile.
func (b *bundle) check(names []string, now time.Time) (*tls.Certificate, string) {
	caCert, _, err := parseCA(b)
	if err != nil {
		return nil, "CA: " + err.Error()
	}
	pair, err := tls.X509KeyPair(b.cert, b.key)
	if err != nil {
		return nil, "serving certificate: " + err.Error()
	}
	leaf := pair.Leaf
	switch {
	case leaf.CheckSignatureFrom(caCert) != nil:
		return nil, "the serving certificate is not signed by the CA"
	case !slices.Equal(leaf.DNSNames, names):
		return &pair, fmt.Sprintf("the serving certificate names %v, not %v", leaf.DNSNames, names)
	case now.After(leaf.NotBefore.Add(leafRenewAfter)) || now.Add(30*24*time.Hour).After(leaf.NotAfter):
		return &pair, "the serving certificate expires " + leaf.NotAfter.UTC().Format(time.RFC3339)
	case now.Add(caRenewBefore).After(caCert.NotAfter):
		return &pair, "the CA expires " + caCert.NotAfter.UTC().Format(time.RFC3339)
	}
	return &pair, ""
}

func parseCA(b *bundle) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(b.caCert)
	kb, _ := pem.Decode(b.caKey)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("missing ca.crt or ca.key")
	}
	c, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	k, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || !c.IsCA || !pub.Equal(&k.PublicKey) {
		return nil, nil, errors.New("ca.crt is not a CA for ca.key")
	}
	return c, k, nil
}

func marshalKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
