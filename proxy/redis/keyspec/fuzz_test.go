package keyspec_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
)

// FuzzLocate feeds space-separated arguments to Lookup and, prefixed with
// the name of the pick'th command, to that command: nothing may panic, every
// position must be a distinct argument after the command (and subcommand)
// name, errors must be *keyspec.Error with a one-line "ERR" message, and on
// error dst must be left as it was.
func FuzzLocate(f *testing.F) {
	for i, line := range []string{"GET k", "MSET a 1 b 2", "ZUNIONSTORE d 2 a b WEIGHTS 1 2",
		"XREAD COUNT 1 STREAMS a b 0 0", "EVAL s 1 k", "OBJECT ENCODING k", "p 2 3"} {
		f.Add(uint16(i*37), []byte(line))
	}
	all := keyspec.Commands()
	f.Fuzz(func(t *testing.T, pick uint16, line []byte) {
		args := bytes.Split(line, []byte(" "))
		if cmd, err := keyspec.Lookup(args); err == nil {
			checkLocate(t, cmd, args)
		} else {
			checkError(t, err)
		}
		cmd := all[int(pick)%len(all)]
		var full [][]byte
		for name := range strings.SplitSeq(cmd.Name, "|") {
			full = append(full, []byte(strings.ToUpper(name)))
		}
		full = append(full, args...)
		if got, err := keyspec.Lookup(full); len(cmd.Subcommands) == 0 && (err != nil || got != cmd) {
			t.Fatalf("Lookup(%q) = %v, %v; want %s", full, got, err, cmd.Name)
		}
		checkLocate(t, cmd, full)
	})
}

func checkLocate(t *testing.T, cmd *keyspec.Command, args [][]byte) {
	dst := []int{-1}
	got, err := cmd.AppendKeyIndexes(dst, args)
	if len(got) == 0 || got[0] != -1 {
		t.Fatalf("%s %q: dst's contents lost: %v", cmd.Name, args, got)
	}
	if err != nil {
		if len(got) != 1 {
			t.Fatalf("%s %q: error %v with positions %v", cmd.Name, args, err, got)
		}
		checkError(t, err)
		return
	}
	if !cmd.KeysComplete() {
		t.Fatalf("%s %q: incomplete key specs but positions %v", cmd.Name, args, got)
	}
	lo := 1
	if cmd.Container() != "" {
		lo = 2
	}
	seen := map[int]bool{}
	for _, i := range got[1:] {
		if i < lo || i >= len(args) || seen[i] {
			t.Fatalf("%s %q: bad or repeated position %d in %v", cmd.Name, args, i, got[1:])
		}
		seen[i] = true
	}
}

func checkError(t *testing.T, err error) {
	var e *keyspec.Error
	if !errors.As(err, &e) || e.Kind == nil || !errors.Is(err, e.Kind) {
		t.Fatalf("error %#v is not a *keyspec.Error with a kind", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "ERR ") || strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("error message %q is not a one-line Redis error", msg)
	}
}
