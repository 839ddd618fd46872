package sidecar

import (
	"strings"
	"testing"
)

// TestFingerprint: the same shape prints the same fingerprint whatever its
// constants, and the cache analysis says what it may cache.
func TestFingerprint(t *testing.T) {
	run := func(sql string) string {
		t.Helper()
		var b strings.Builder
		if err := Fingerprint(sql, &b); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return b.String()
	}
	a, b := run("SELECT item FROM orders WHERE id = 1"), run("SELECT item FROM orders WHERE id = 42")
	if a != b || !strings.Contains(a, "cacheable: yes") || !strings.Contains(a, "reads: orders") {
		t.Fatalf("%q\n%q", a, b)
	}
	if out := run("SELECT now(), item FROM orders"); !strings.Contains(out, "cacheable: no (now()") {
		t.Fatal(out)
	}
	if err := Fingerprint("SELEC", &strings.Builder{}); err == nil {
		t.Fatal("a syntax error printed a fingerprint")
	}
}
