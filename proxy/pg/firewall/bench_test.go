package firewall

import (
	"strconv"
	"testing"
)

func BenchmarkCheckDistinctConstants(b *testing.B) {
	f, _ := New(Config{BindingSetting: "tenantguard.binding", ProtectedSchema: "tenantguard"})
	defer f.Close()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f.Check("SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(i) + ";")
	}
}
