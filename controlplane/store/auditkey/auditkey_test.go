package auditkey_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
)

func TestRoundTrip(t *testing.T) {
	k, err := auditkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := auditkey.ParseSigningKey(k.MarshalPEM())
	if err != nil || k2.ID() != k.ID() || len(k.ID()) != 16 {
		t.Fatalf("%v %q %q", err, k2.ID(), k.ID())
	}
	pubs, err := auditkey.ParseVerificationKeys(k.Public().MarshalPEM())
	if err != nil || len(pubs) != 1 || pubs[0].ID() != k.ID() {
		t.Fatalf("%v %v", err, pubs)
	}
	hash := sha256.Sum256([]byte("entry"))
	sig := k2.SignEntry(hash[:])
	if !pubs[0].VerifyEntry(hash[:], sig) {
		t.Fatal("signature does not verify")
	}
	other := sha256.Sum256([]byte("other entry"))
	if pubs[0].VerifyEntry(other[:], sig) {
		t.Fatal("signature verifies another hash")
	}
	if got := string(auditkey.EntryMessage(hash[:])); got != "tenantguard-audit-entry:"+hex.EncodeToString(hash[:]) {
		t.Fatalf("message %q", got)
	}
	// Printed by mistake, the key shows its id only.
	for _, f := range []string{"%v", "%+v", "%s", "%#v"} {
		if got := fmt.Sprintf(f, k); got != "audit signing key "+k.ID() {
			t.Errorf("%s: %q", f, got)
		}
	}
	if got := fmt.Sprintf("%+v", struct{ K *auditkey.SigningKey }{k}); strings.Contains(got, "[") {
		t.Errorf("in a struct: %s", got)
	}
}

// TestOpenSSLKeys: keys made with openssl, as the documentation says,
// are read, and their id is the one the documentation defines.
func TestOpenSSLKeys(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "audit.key"), filepath.Join(dir, "audit.pub")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "ed25519", "-out", key},
		{"pkey", "-in", key, "-pubout", "-out", pub},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	data, _ := os.ReadFile(key)
	k, err := auditkey.ParseSigningKey(data)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(pub)
	pubs, err := auditkey.ParseVerificationKeys(data)
	if err != nil || len(pubs) != 1 || pubs[0].ID() != k.ID() {
		t.Fatalf("%v %v", err, pubs)
	}
	// The id is the SHA-256 of the raw key: the last 32 bytes of the DER.
	block, _ := pem.Decode(data)
	sum := sha256.Sum256(block.Bytes[len(block.Bytes)-32:])
	if k.ID() != hex.EncodeToString(sum[:8]) {
		t.Fatalf("id %s", k.ID())
	}
}

func TestParseErrors(t *testing.T) {
	k, _ := auditkey.Generate()
	k2, _ := auditkey.Generate()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPubDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	ecPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPubDER})
	for _, tc := range []struct {
		name    string
		signing bool
		data    string
		want    string
	}{
		{"empty signing key", true, "", "no PEM block"},
		{"public key as signing key", true, string(k.Public().MarshalPEM()), `"PUBLIC KEY" PEM block`},
		{"two signing keys", true, string(k.MarshalPEM()) + string(k2.MarshalPEM()), "more than one PEM block"},
		{"ECDSA signing key", true, string(ecPEM), "want Ed25519"},
		{"garbage in the block", true, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not PKCS #8"},
		{"no public key", false, "nothing here", "no PUBLIC KEY"},
		{"private key as public key", false, string(k.MarshalPEM()), `"PRIVATE KEY" PEM block`},
		{"ECDSA public key", false, string(k.Public().MarshalPEM()) + string(ecPubPEM), "PEM block 2 is a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.signing {
				_, err = auditkey.ParseSigningKey([]byte(tc.data))
			} else {
				_, err = auditkey.ParseVerificationKeys([]byte(tc.data))
			}
			if !errors.Is(err, auditkey.ErrInvalidKey) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
	// A bundle with explanatory text between keys.
	bundle := "current:\n" + string(k.Public().MarshalPEM()) + "retired 2026-01:\n" + string(k2.Public().MarshalPEM())
	keys, err := auditkey.ParseVerificationKeys([]byte(bundle))
	if err != nil || len(keys) != 2 || keys[1].ID() != k2.ID() {
		t.Fatalf("bundle: %v %v", err, keys)
	}
}
