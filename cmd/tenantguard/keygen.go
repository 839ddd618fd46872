package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tenantguard/tenantguard/extauthz/token"
)

// runKeygen writes a new signing key (<id>.key.pem, mode 0600) and its
// verification key (<id>.pub.pem) into a directory.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("extauthz keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "key id, e.g. 2026-11 (letters, digits, . _ -)")
	dir := fs.String("dir", ".", "directory to write the key files into")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *id == "" {
		fmt.Fprintln(stderr, "tenantguard extauthz keygen: --id is required")
		return 2
	}
	priv, pub, err := WriteKeyPair(*dir, *id)
	if err != nil {
		fmt.Fprintln(stderr, "tenantguard extauthz keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "signing key:      %s (keep secret; ext_authz only)\nverification key: %s (ext_authz and sidecars)\n", priv, pub)
	return 0
}

// WriteKeyPair generates a key pair and writes it; it refuses to overwrite.
func WriteKeyPair(dir, id string) (privPath, pubPath string, err error) {
	k, err := token.GenerateKey(id)
	if err != nil {
		return "", "", err
	}
	privPath = filepath.Join(dir, id+".key.pem")
	pubPath = filepath.Join(dir, id+".pub.pem")
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Stat(p); err == nil {
			return "", "", fmt.Errorf("%s exists; not overwriting", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", "", err
		}
	}
	if err := os.WriteFile(privPath, k.MarshalPEM(), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(pubPath, k.Public().MarshalPEM(), 0o644); err != nil {
		return "", "", err
	}
	return privPath, pubPath, nil
}
