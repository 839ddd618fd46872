package keyspec_test

import (
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
)

var benchLines = []string{
	"SET k v",
	"MSET k1 v1 k2 v2",
	"ZUNIONSTORE dest 2 k1 k2 WEIGHTS 1 2",
	"XREAD COUNT 1 STREAMS s1 s2 0 0",
	"OBJECT ENCODING k",
}

// lookupLocate is what a proxy does per command.
func lookupLocate(args [][]byte, dst []int) ([]int, error) {
	cmd, err := keyspec.Lookup(args)
	if err != nil {
		return dst, err
	}
	return cmd.AppendKeyIndexes(dst[:0], args)
}

func BenchmarkLookupLocate(b *testing.B) {
	for _, line := range benchLines {
		args := argv(line)
		b.Run(line, func(b *testing.B) {
			b.ReportAllocs()
			dst := make([]int, 0, 8)
			var err error
			for b.Loop() {
				if dst, err = lookupLocate(args, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestLookupLocateDoesNotAllocate(t *testing.T) {
	for _, line := range benchLines {
		args := argv(line)
		dst := make([]int, 0, 8)
		if n := testing.AllocsPerRun(100, func() { dst, _ = lookupLocate(args, dst) }); n != 0 {
			t.Errorf("%q: %v allocations per Lookup+AppendKeyIndexes, want 0", line, n)
		}
	}
}
