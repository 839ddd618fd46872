package namespace_test

import (
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

func BenchmarkAppendKey(b *testing.B) {
	ns := namespace.MustNew("acme", namespace.Spread)
	key := []byte("user:1234:profile")
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		dst = ns.AppendKey(dst[:0], key)
		if _, ok := ns.StripKey(dst); !ok {
			b.Fatal("strip")
		}
	}
}

func TestNoAllocs(t *testing.T) {
	ns := namespace.MustNew("acme", namespace.OneSlot)
	key, ch := []byte("user:1"), []byte("__keyspace@0__:user:*")
	dst, back := make([]byte, 0, 64), make([]byte, 0, 64)
	n := testing.AllocsPerRun(100, func() {
		dst = ns.AppendKey(dst[:0], key)
		_, _ = ns.StripKey(dst)
		dst = ns.AppendPattern(dst[:0], key)
		dst, _ = ns.AppendChannel(dst[:0], ch)
		back, _ = ns.AppendStripChannel(back[:0], dst)
		_ = namespace.CheckPattern(key, 10, 10)
		_ = namespace.Match(key, key)
	})
	if n != 0 {
		t.Errorf("%v allocations per run, want 0", n)
	}
}
