package rules_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
)

// FuzzRewrite rewrites random argument lists, alone and after the name of
// the pick'th command, under a strict or a permissive policy and either
// mode: nothing panics, the input is left alone, errors are one-line ERR or
// NOPERM replies, and in every forwarded command each key (as keyspec
// locates it in the output), KEYS and SCAN pattern and channel is in the
// tenant's namespace.
func FuzzRewrite(f *testing.F) {
	for i, line := range []string{"GET k", "MSET a 1 b 2", "ZUNIONSTORE d 2 a b WEIGHTS 1 2",
		"XREAD COUNT 1 STREAMS a b 0 0", "EVAL s 1 k", "SCAN 0 MATCH a* COUNT 9", "x",
		"SORT l BY w_* GET # STORE d", "PSUBSCRIBE __keyspace@0__:*", "PUBSUB CHANNELS", "k 0 MATCH x",
		"EVAL #!lua\nreturn 2 a b", "EVALSHA 0123 -1", "EVAL_RO s 01", "SCRIPT LOAD #!", "SCRIPT FLUSH ASYNC",
		"SCRIPT EXISTS a b", "FCALL f 1 k", "INFO keyspace", "CLIENT TRACKING on BCAST PREFIX a"} {
		f.Add(uint16(i*37), []byte(line))
	}
	all := keyspec.Commands()
	f.Fuzz(func(t *testing.T, pick uint16, line []byte) {
		ns := namespace.MustNew("acme", namespace.Mode(pick>>15))
		pol := (*rules.Policy)(nil)
		if pick&(1<<14) != 0 {
			pol = open
		}
		rw := rules.NewRewriter(ns, pol)
		args := bytes.Split(line, []byte(" "))
		checkRewrite(t, rw, args)
		cmd := all[int(pick&(1<<14-1))%len(all)]
		var full [][]byte
		for name := range strings.SplitSeq(cmd.Name, "|") {
			full = append(full, []byte(name))
		}
		checkRewrite(t, rw, append(full, args...))
	})
}

func checkRewrite(t *testing.T, rw *rules.Rewriter, args [][]byte) {
	t.Helper()
	before := bytes.Join(args, []byte{0})
	out, plan, err := rw.Rewrite(args)
	if !bytes.Equal(before, bytes.Join(args, []byte{0})) {
		t.Fatalf("%q: input modified", args)
	}
	if err != nil {
		msg := err.Error()
		var re *rules.Error
		if strings.ContainsAny(msg, "\r\n") || !strings.HasPrefix(msg, "ERR ") &&
			!(errors.As(err, &re) && strings.HasPrefix(msg, "NOPERM tenantguard: ")) {
			t.Fatalf("%q: bad error %q", args, msg)
		}
		return
	}
	if !plan.Forward() {
		return
	}
	// A script goes out in the tenant's form, the client's text in it.
	switch plan {
	case rules.ReplyScript:
		if !bytes.Equal(out[1], rules.AppendScriptBody(nil, rw.Namespace(), args[1])) {
			t.Fatalf("%q -> %q: the script is not in the tenant's form", args, out)
		}
	case rules.ReplyScriptLoad:
		if !bytes.Equal(out[2], rules.AppendScriptBody(nil, rw.Namespace(), args[2])) {
			t.Fatalf("%q -> %q: the script is not in the tenant's form", args, out)
		}
	}
	cmd, err := keyspec.Lookup(out)
	if err != nil {
		t.Fatalf("%q -> %q: %v", args, out, err)
	}
	ns := rw.Namespace()
	inNS := func(what string, b []byte) {
		if _, ok := ns.StripKey(b); !ok {
			t.Fatalf("%q -> %q: %s %q outside the namespace", args, out, what, b)
		}
	}
	if cmd.HasKeys() {
		checkKeysIn(t, ns, cmd, out)
	}
	switch cmd.Name {
	case "keys":
		inNS("pattern", out[1])
	case "scan":
		found := false
		for i := 2; i+1 < len(out); i += 2 {
			if bytes.EqualFold(out[i], []byte("match")) {
				inNS("pattern", out[i+1])
				found = true
			}
		}
		if !found {
			t.Fatalf("%q -> %q: SCAN without MATCH", args, out)
		}
	case "cluster|keyslot":
		inNS("key", out[2])
	}
	first := 1
	switch plan {
	case rules.ReplyStripChannels, rules.ReplyStripNumSub:
		first = 2
	case rules.ReplyPubSub:
	default:
		if cmd.Name != "publish" && cmd.Name != "spublish" {
			return
		}
		out = out[:2]
	}
	for _, ch := range out[first:] {
		if _, ok := ns.AppendStripChannel(nil, ch); !ok {
			t.Fatalf("%q -> %q: channel %q outside the namespace", args, out, ch)
		}
	}
}

// checkKeysIn checks the keys keyspec locates in out (the sorted key for
// SORT, whose other keys keyspec cannot locate).
func checkKeysIn(t *testing.T, ns *namespace.Namespace, cmd *keyspec.Command, out [][]byte) {
	t.Helper()
	if !cmd.KeysComplete() {
		if _, ok := ns.StripKey(out[1]); !ok {
			t.Fatalf("%q: key %q outside the namespace", out, out[1])
		}
		return
	}
	idx, err := cmd.AppendKeyIndexes(nil, out)
	if err != nil {
		t.Fatalf("%q: keys of the output: %v", out, err)
	}
	for _, i := range idx {
		if _, ok := ns.StripKey(out[i]); !ok {
			t.Fatalf("%q: key %q at %d outside the namespace", out, out[i], i)
		}
	}
}
