package redis

import (
	"bytes"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// FuzzParseTracking: any CLIENT TRACKING argument list is read or refused
// with a one-line Redis error, without panicking, and the prefixes kept
// do not alias the input.
func FuzzParseTracking(f *testing.F) {
	for _, line := range []string{"CLIENT TRACKING on", "CLIENT TRACKING ON BCAST PREFIX a PREFIX b NOLOOP",
		"CLIENT TRACKING on REDIRECT", "CLIENT TRACKING off OPTIN OPTOUT", "CLIENT TRACKING maybe", "CLIENT TRACKING on PREFIX"} {
		f.Add([]byte(line))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		args := bytes.Split(line, []byte(" "))
		tr, _, msg := parseTracking(args)
		if msg != "" {
			if bytes.ContainsAny([]byte(msg), "\r\n") || msg[:4] != "ERR " {
				t.Fatalf("%q: bad error %q", line, msg)
			}
			return
		}
		for _, p := range tr.prefixes {
			for _, a := range args {
				if len(p) > 0 && len(a) > 0 && &p[0] == &a[0] {
					t.Fatalf("%q: prefix aliases the input", line)
				}
			}
		}
	})
}

// FuzzInvalidation: any reply the upstream sends on a tracking connection
// is passed on, when it is an invalidation, with only the tenant's keys,
// un-prefixed, in a valid push; nothing else of it.
func FuzzInvalidation(f *testing.F) {
	for _, raw := range []string{
		">2\r\n$10\r\ninvalidate\r\n*2\r\n$8\r\nt:acme:k\r\n$10\r\nt:globex:k\r\n",
		">2\r\n$10\r\ninvalidate\r\n_\r\n",
		">2\r\n$10\r\ninvalidate\r\n*1\r\n$10\r\nt:globex:k\r\n",
		">2\r\n$10\r\ninvalidate\r\n*1\r\n*1\r\n$1\r\nx\r\n",
		">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
	} {
		f.Add([]byte(raw))
	}
	s := &clientConn{ns: namespace.MustNew("acme", namespace.Spread)}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rep resp.Reply
		if n, err := rep.Parse(raw); err != nil || n == 0 || !isInvalidation(&rep) {
			return
		}
		out := s.appendInvalidation(nil, &rep)
		if len(out) == 0 {
			return
		}
		var got resp.Reply
		n, err := got.Parse(out)
		if err != nil || n != len(out) || !isInvalidation(&got) {
			t.Fatalf("%q -> %q: not one invalidation (%v)", raw, out, err)
		}
		keys := got.Root().Index(1)
		if !keys.IsAggregate() {
			if !bytes.Equal(out, rep.Raw()) {
				t.Fatalf("%q -> %q: a flush changed", raw, out)
			}
			return
		}
		for it := keys.Iter(); it.Next(); {
			k := it.Value().Bytes()
			if !bytes.Contains(raw, append([]byte("t:acme:"), k...)) {
				t.Fatalf("%q -> %q: key %q is not one of acme's", raw, out, k)
			}
		}
	})
}
