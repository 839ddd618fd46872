package namespace_test

import (
	"bytes"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// FuzzNamespace checks, for random tenants A and B, key k, pattern p and
// channel ch, that names round-trip and never cross tenants:
// StripKey(AppendKey(k)) == k; B cannot strip A's key; no pattern of A
// (key, channel or notification pattern) matches any name of B under
// Match, the port of Redis's matcher; within A, the scoped pattern matches
// the scoped key exactly when p matches k.
func FuzzNamespace(f *testing.F) {
	f.Add("acme", "acm", uint8(0), []byte("e:x"), []byte("*"), []byte("news"))
	f.Add("a", "b", uint8(1), []byte("{x}"), []byte("[a-z]*"), []byte("__keyspace@0__:*"))
	f.Add("a:b", "a", uint8(2), []byte(""), []byte(`\*`), []byte("__keyevent@0__:set"))
	f.Add("%41", "A", uint8(3), []byte("k"), []byte("b:*"), []byte("__keyspace@0__:k"))
	f.Fuzz(func(t *testing.T, ta, tb string, modes uint8, k, p, ch []byte) {
		if len(p) > 64 {
			p = p[:64]
		}
		a, errA := namespace.New(ta, namespace.Mode(modes&1))
		b, errB := namespace.New(tb, namespace.Mode(modes>>1&1))
		if (errA != nil) != (ta == "" || len(ta) > namespace.MaxTenantLen) {
			t.Fatalf("New(%q) = %v", ta, errA)
		}
		if errA != nil || errB != nil {
			return
		}
		same := ta == tb && a.Mode() == b.Mode()
		if encA, encB := namespace.AppendEncodedTenant(nil, ta), namespace.AppendEncodedTenant(nil, tb); bytes.Equal(encA, encB) != (ta == tb) {
			t.Fatalf("encodings of %q and %q: %q, %q", ta, tb, encA, encB)
		}
		if string(namespace.AppendGlobEscaped(nil, []byte(a.KeyPrefix()))) != a.KeyPrefix() {
			t.Fatalf("prefix %q is not glob-free", a.KeyPrefix())
		}

		ka := a.AppendKey(nil, k)
		if back, ok := a.StripKey(ka); !ok || !bytes.Equal(back, k) {
			t.Fatalf("StripKey(AppendKey(%q)) = %q, %v", k, back, ok)
		}
		kb := b.AppendKey(nil, k)
		if _, ok := b.StripKey(ka); ok != same {
			t.Fatalf("%q under %q: StripKey(%q) ok=%v", ta, tb, ka, ok)
		}
		pa := a.AppendPattern(nil, p)
		if !same && (namespace.Match(pa, kb) || bytes.Equal(pa, kb)) {
			t.Fatalf("pattern %q of %q matches key %q of %q", pa, ta, kb, tb)
		}
		if len(k) > 0 && namespace.Match(pa, ka) != namespace.Match(p, k) {
			t.Fatalf("Match(%q, %q) != Match(%q, %q)", pa, ka, p, k)
		}

		// Channels and keyspace notifications.
		notifB := append([]byte("__keyspace@0__:"), kb...)
		chB, okB := b.AppendChannel(nil, ch)
		for _, pat := range [][]byte{p, ch, append([]byte("__keyspace@0__:"), p...)} {
			sa, ok := a.AppendChannel(nil, pat)
			if !ok {
				if namespace.IsNotificationChannel(pat) {
					continue
				}
				t.Fatalf("AppendChannel(%q) refused", pat)
			}
			if back, ok := a.AppendStripChannel(nil, sa); !ok || !bytes.Equal(back, pat) {
				t.Fatalf("AppendStripChannel(AppendChannel(%q)) = %q, %v", pat, back, ok)
			}
			if same {
				continue
			}
			if namespace.Match(sa, notifB) || okB && namespace.Match(sa, chB) {
				t.Fatalf("channel pattern %q of %q matches %q or %q of %q", sa, ta, notifB, chB, tb)
			}
			if _, ok := b.AppendStripChannel(nil, sa); ok {
				t.Fatalf("%q strips %q's channel %q", tb, ta, sa)
			}
		}
	})
}
