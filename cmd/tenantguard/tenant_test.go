//go:build !sidecar && !extauthz

package main

import (
	"os"
	"testing"
)

// /dev/null is a character device but no terminal: output sent there (or
// to a file) gets plain lines, never a redrawn bar.
func TestTerminalNotDevNull(t *testing.T) {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, _ := terminal(f); ok {
		t.Errorf("%s taken for a terminal", os.DevNull)
	}
	g, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if ok, _ := terminal(g); ok {
		t.Error("a file taken for a terminal")
	}
}
