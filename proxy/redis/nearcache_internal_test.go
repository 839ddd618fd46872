package redis

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// newTestNearCache is a near cache of tenants acme and globex on every
// key, with no connections.
func newTestNearCache(t testing.TB) *nearCache {
	t.Helper()
	srv := &Server{cfg: Config{Upstream: "x"}.withDefaults(), log: slog.New(slog.DiscardHandler)}
	nc, err := newNearCache(srv, map[string]NearCacheRule{
		"acme": {Patterns: []string{"*"}, MaxTTL: time.Hour}, "globex": {Patterns: []string{"*"}, MaxTTL: time.Hour},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.close)
	nc.flush(true)
	return nc
}

// fill stores reply as the answer to GET key of tenant (a namespaced key).
func (nc *nearCache) testFill(tenant, key, reply string) []byte {
	cmd := resp.AppendCommand(nil, [][]byte{[]byte("GET"), []byte(key)})
	tok := nc.startFill(nc.tenants[tenant], []byte(key), cmd)
	nc.finishFill(tok, []byte(reply))
	nc.tenants[tenant].c.Wait()
	return cmd
}

// FuzzNearCacheInvalidations: whatever the invalidation connection
// receives is read without panicking until it ends; a well-formed
// invalidation naming a key evicts it, a null one everything, and
// nothing else evicts anything.
func FuzzNearCacheInvalidations(f *testing.F) {
	msg := func(keys ...string) []byte {
		b := []byte("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n")
		if keys == nil {
			return append(b, "*-1\r\n"...)
		}
		b = resp.AppendArrayHeader(b, len(keys))
		for _, k := range keys {
			b = resp.AppendBulk(b, []byte(k))
		}
		return b
	}
	f.Add(msg("t:acme:k"))
	f.Add(msg("t:globex:k", "t:acme:other"))
	f.Add(msg())
	f.Add([]byte("*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n"))
	f.Add(append(msg("x"), "*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n"...))
	f.Add([]byte("+OK\r\n-ERR x\r\n*3\r\n$7\r\nmessage\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		nc := newTestNearCache(t)
		keyA, keyG := nsKeyOf(t, "acme", "k"), nsKeyOf(t, "globex", "k")
		cmdA := nc.testFill("acme", keyA, "$1\r\na\r\n")
		cmdG := nc.testFill("globex", keyG, "$1\r\ng\r\n")
		inv := &upConn{rr: resp.NewReplyReader(bytes.NewReader(in), 1024)}
		nc.readInvalidations(inv) // returns at the end of the input
		_, hitA := nc.get(nc.tenants["acme"], []byte(keyA), cmdA)
		_, hitG := nc.get(nc.tenants["globex"], []byte(keyG), cmdG)
		// What a well-formed stream must have done to the two entries.
		rr := resp.NewReplyReader(bytes.NewReader(in), 1024)
		wantA, wantG := true, true
		for {
			rep, err := rr.ReadReply()
			if err != nil {
				break
			}
			v := rep.Root()
			if v.Type() != resp.TypeArray || v.Len() != 3 || string(v.Index(0).Bytes()) != "message" {
				continue
			}
			keys := v.Index(2)
			if keys.IsNull() || !keys.IsAggregate() {
				wantA, wantG = false, false
				continue
			}
			for i := range keys.Len() {
				switch string(keys.Index(i).Bytes()) {
				case keyA:
					wantA = false
				case keyG:
					wantG = false
				}
			}
		}
		if hitA != wantA || hitG != wantG {
			t.Fatalf("%q: acme entry kept %v (want %v), globex %v (want %v)", in, hitA, wantA, hitG, wantG)
		}
	})
}

func nsKeyOf(t testing.TB, tenant, key string) string {
	t.Helper()
	return string(namespace.MustNew(tenant, namespace.Spread).AppendKey(nil, []byte(key)))
}

// TestNearCacheFillSpoiled: a fill is not stored when its key was
// invalidated, or the cache flushed, between its send and its reply; an
// entry of one tenant is never found in the other's cache.
func TestNearCacheFillSpoiled(t *testing.T) {
	nc := newTestNearCache(t)
	acme, globex := nc.tenants["acme"], nc.tenants["globex"]
	key := []byte(acme.prefix + "k")
	cmd := resp.AppendCommand(nil, [][]byte{[]byte("GET"), key})
	for _, tc := range []struct {
		name    string
		between func()
		stored  bool
	}{
		{"nothing between", func() {}, true},
		{"invalidated", func() { nc.invalidate(key) }, false},
		{"another key invalidated", func() { nc.invalidate([]byte(acme.prefix + "other")) }, true},
		{"flushed", func() { nc.flush(true) }, false},
		{"tenant flushed", func() { nc.flushTenant(acme) }, false},
		{"other tenant flushed", func() { nc.flushTenant(globex) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc.invalidate(key)
			tok := nc.startFill(acme, key, cmd)
			tc.between()
			nc.finishFill(tok, []byte("$1\r\nv\r\n"))
			acme.c.Wait()
			if _, ok := nc.get(acme, key, cmd); ok != tc.stored {
				t.Fatalf("stored %v, want %v", ok, tc.stored)
			}
			if _, ok := nc.get(globex, key, cmd); ok {
				t.Fatal("acme's entry found in globex's cache")
			}
		})
	}
}
