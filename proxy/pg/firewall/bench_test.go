package firewall

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// BenchmarkCheck measures Check on three workloads, each through the shape
// ("shape", what Check does) and through the normalized-text path that
// Check used before and still uses for text the lexer leaves to the
// parser ("normalized"), in one run:
//
//   - repeated: one text over and over;
//   - known-shape: pgbench -S, a text never seen before of a shape seen
//     before (a random constant each call);
//   - new-shape: a shape never seen before each call.
//
// Compare allocs/op and the ratio of ns/op within one run; on a shared
// machine absolute times say little.
func BenchmarkCheck(b *testing.B) {
	paths := []struct {
		name  string
		check func(*Firewall, string) *Verdict
	}{
		{"shape", (*Firewall).Check},
		{"normalized", (*Firewall).checkNormalized},
	}
	for _, p := range paths {
		b.Run("repeated/"+p.name, func(b *testing.B) {
			f := benchFirewall(b)
			q := "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"
			p.check(f, q)
			f.cache.Wait()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.check(f, q)
			}
		})
		b.Run("known-shape/"+p.name, func(b *testing.B) {
			f := benchFirewall(b)
			p.check(f, "SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
			f.cache.Wait()
			// pgbench draws aid uniformly from 1..100000 per scale unit:
			// texts rarely repeat. Built ahead, so the loop measures Check.
			rng := rand.New(rand.NewPCG(1, 2))
			qs := make([]string, 1<<14)
			for i := range qs {
				qs[i] = "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(1+rng.IntN(10_000_000)) + ";"
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.check(f, qs[i&(len(qs)-1)])
			}
		})
		b.Run("new-shape/"+p.name, func(b *testing.B) {
			f := benchFirewall(b)
			qs := make([]string, b.N)
			for i := range qs {
				qs[i] = "SELECT abalance, c" + strconv.Itoa(i) + " FROM pgbench_accounts WHERE aid = " + strconv.Itoa(i) + ";"
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.check(f, qs[i])
			}
		})
	}
}

// BenchmarkShape is the lexer and shape alone, for pgbench -S.
func BenchmarkShape(b *testing.B) {
	q := "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf, _ = appendShape(buf[:0], q)
	}
}

func benchFirewall(b *testing.B) *Firewall {
	f, err := New(Config{BindingSetting: "tenantguard.binding", ProtectedSchema: "tenantguard"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.Close)
	return f
}
