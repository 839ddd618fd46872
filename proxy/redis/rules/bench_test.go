package rules_test

import (
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/rules"
)

var benchLines = []string{
	"GET k",
	"SET k v",
	"MSET k1 v1 k2 v2",
	"ZUNIONSTORE dest 2 a b WEIGHTS 1 2",
	"XREAD COUNT 1 STREAMS s1 s2 0 0",
	"SCAN 0 MATCH user:* COUNT 100",
	"SORT l BY w_* GET # GET o_*->f",
	"SUBSCRIBE a b",
	"PING",
}

func BenchmarkRewrite(b *testing.B) {
	for _, line := range benchLines {
		args := argv(line)
		b.Run(line, func(b *testing.B) {
			rw := rules.NewRewriter(acme, nil)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := rw.Rewrite(args); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestRewriteDoesNotAllocate(t *testing.T) {
	for _, line := range benchLines {
		args := argv(line)
		rw := rules.NewRewriter(acme, nil)
		if n := testing.AllocsPerRun(100, func() { _, _, _ = rw.Rewrite(args) }); n != 0 {
			t.Errorf("%q: %v allocations per Rewrite, want 0", line, n)
		}
	}
}
