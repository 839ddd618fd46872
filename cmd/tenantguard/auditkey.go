//go:build !sidecar && !extauthz

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
)

// runAuditKey writes a new audit signing key (mode 0600) and its public
// key, for the control plane's audit_key_file and for auditors.
func runAuditKey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane auditkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "audit.key", "where to write the signing key; the public key goes next to it, .key replaced by .pub")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	priv := *out
	pub := strings.TrimSuffix(priv, ".key") + ".pub"
	k, err := writeAuditKey(priv, pub)
	if err != nil {
		fmt.Fprintln(stderr, "tenantguard controlplane auditkey:", err)
		return 1
	}
	fmt.Fprintf(stdout, "audit signing key:       %s (key id %s; audit_key_file of the control planes, keep it from the database's administrators)\n"+
		"audit verification key:  %s (for auditors, and for audit_verification_keys when you rotate)\n", priv, k.ID(), pub)
	return 0
}

func writeAuditKey(priv, pub string) (*auditkey.SigningKey, error) {
	k, err := auditkey.Generate()
	if err != nil {
		return nil, err
	}
	for _, p := range []string{priv, pub} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s exists; not overwriting", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if err := writeNew(priv, k.MarshalPEM(), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(pub, k.Public().MarshalPEM(), 0o644); err != nil {
		return nil, err
	}
	return k, nil
}

// writeNew creates path (never replacing a file) with data and mode.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
