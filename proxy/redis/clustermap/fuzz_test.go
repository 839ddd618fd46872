package clustermap_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/clustermap"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// FuzzParseTopology feeds arbitrary replies to the topology parsers: no
// panic, and a map they accept names a master for exactly the slots it
// covers.
func FuzzParseTopology(f *testing.F) {
	for _, name := range []string{"shards.resp", "slots.resp"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$1\r\n?\r\n:1\r\n"))
	f.Add([]byte("%1\r\n+slots\r\n*2\r\n:0\r\n:1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rep resp.Reply
		if _, err := rep.Parse(b); err != nil {
			return
		}
		for _, parse := range []func(resp.Value, string) (*clustermap.Map, error){clustermap.ParseShards, clustermap.ParseShardsTLS, clustermap.ParseSlots} {
			m, err := parse(rep.Root(), "127.0.0.1")
			if err != nil {
				continue
			}
			n := 0
			for s := range clustermap.Slots {
				if addr, ok := m.Master(uint16(s)); ok {
					n++
					if addr == "" {
						t.Fatalf("slot %d: empty address", s)
					}
				}
			}
			if n != m.Covered() {
				t.Fatalf("Master covers %d slots, Covered says %d", n, m.Covered())
			}
		}
	})
}

// FuzzParseRedirect checks that an accepted redirect is in range.
func FuzzParseRedirect(f *testing.F) {
	f.Add([]byte("MOVED 3999 127.0.0.1:6381"))
	f.Add([]byte("ASK 1 :7000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := clustermap.ParseRedirect(b, "h")
		if ok && (r.Slot >= clustermap.Slots || r.Addr == "") {
			t.Fatalf("%q: %+v", b, r)
		}
	})
}
