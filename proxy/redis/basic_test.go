package redis_test

import (
	"sort"
	"testing"
	"time"
)

func TestBasicCommands(t *testing.T) {
	for _, proto := range []int{2, 3} {
		p := startProxy(t, nil)
		ctx := ctxT(t, 20*time.Second)
		c := p.client(t, "acme", acmeSecret, proto)
		if err := c.Set(ctx, "greeting", "hello", 0).Err(); err != nil {
			t.Fatalf("resp%d SET: %v", proto, err)
		}
		if v, err := c.Get(ctx, "greeting").Result(); err != nil || v != "hello" {
			t.Fatalf("resp%d GET: %q %v", proto, v, err)
		}
		if err := c.HSet(ctx, "h", "f", "v").Err(); err != nil {
			t.Fatal(err)
		}
		keys, err := c.Keys(ctx, "*").Result()
		sort.Strings(keys)
		i := sort.SearchStrings(keys, "greeting")
		if err != nil || i == len(keys) || keys[i] != "greeting" {
			t.Fatalf("resp%d KEYS: %v %v", proto, keys, err)
		}
		// The upstream holds the key under the tenant's namespace only.
		d := p.direct(t)
		raw, err := d.Keys(ctx, "*greeting*").Result()
		if err != nil || len(raw) != 1 || raw[0] == "greeting" {
			t.Fatalf("upstream keys %v %v", raw, err)
		}
		if err := c.FlushDB(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
}
