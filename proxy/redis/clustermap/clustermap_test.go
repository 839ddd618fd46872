package clustermap_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/clustermap"
	"github.com/tenantguard/tenantguard/wire/resp"
)

func TestKeySlot(t *testing.T) {
	// Values from redis-server's CLUSTER KEYSLOT.
	for _, tc := range []struct {
		key  string
		want uint16
	}{
		{"", 0},
		{"foo", 12182},
		{"bar", 5061},
		{"123456789", 12739}, // CRC-16/XMODEM's check value 0x31C3
		{"{user1000}.following", 3443},
		{"{user1000}.followers", 3443},
		{"foo{}{bar}", 8363},
		{"foo{{bar}}zap", 4015},
		{"foo{bar}{zap}", 5061},
		{"{t:acme}:k", clustermap.KeySlot([]byte("t:acme"))},
	} {
		if got := clustermap.KeySlot([]byte(tc.key)); got != tc.want {
			t.Errorf("KeySlot(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

func parse(t testing.TB, b []byte) resp.Value {
	t.Helper()
	var rep resp.Reply
	if _, err := rep.Parse(b); err != nil {
		t.Fatalf("parse %q: %v", b, err)
	}
	return rep.Root()
}

func TestParseRealReplies(t *testing.T) {
	for _, tc := range []struct {
		file  string
		parse func(resp.Value, string) (*clustermap.Map, error)
	}{
		{"shards.resp", clustermap.ParseShards},
		{"slots.resp", clustermap.ParseSlots},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			m, err := tc.parse(parse(t, b), "127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			if m.Covered() != clustermap.Slots {
				t.Errorf("covered %d slots", m.Covered())
			}
			for slot, want := range map[uint16]string{0: "127.0.0.1:17001", 8000: "127.0.0.1:17001", 8001: "127.0.0.1:17002", 16383: "127.0.0.1:17002"} {
				if got, ok := m.Master(slot); !ok || got != want {
					t.Errorf("Master(%d) = %q, %v; want %q", slot, got, ok, want)
				}
			}
			if got := m.Masters(); len(got) != 2 {
				t.Errorf("masters %v", got)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	for _, tc := range []struct{ name, reply string }{
		{"not an array", "+OK\r\n"},
		{"slot out of range", "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n"},
		{"reversed range", "*1\r\n*3\r\n:9\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n"},
		{"bad port", "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:70000\r\n"},
		{"no master", "*1\r\n*3\r\n:0\r\n:1\r\n:5\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := clustermap.ParseSlots(parse(t, []byte(tc.reply)), "h"); err == nil {
				t.Errorf("ParseSlots accepted it: %v", m.Masters())
			}
		})
	}
	for _, tc := range []struct{ name, reply string }{
		{"not an array", ":1\r\n"},
		{"odd slots", "*1\r\n*4\r\n$5\r\nslots\r\n*1\r\n:0\r\n$5\r\nnodes\r\n*0\r\n"},
		{"no master", "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5\r\n$5\r\nnodes\r\n*0\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := clustermap.ParseShards(parse(t, []byte(tc.reply)), "h"); err == nil {
				t.Errorf("ParseShards accepted it: %v", m.Masters())
			}
		})
	}
}

func TestParseRedirect(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want clustermap.Redirect
		ok   bool
	}{
		{"MOVED 3999 127.0.0.1:6381", clustermap.Redirect{Slot: 3999, Addr: "127.0.0.1:6381"}, true},
		{"ASK 16383 10.0.0.1:7000", clustermap.Redirect{Ask: true, Slot: 16383, Addr: "10.0.0.1:7000"}, true},
		{"MOVED 1 :7000", clustermap.Redirect{Slot: 1, Addr: "seed:7000"}, true},
		{"MOVED 1 [::1]:7000", clustermap.Redirect{Slot: 1, Addr: "[::1]:7000"}, true},
		{"MOVED 16384 h:1", clustermap.Redirect{}, false},
		{"MOVED -1 h:1", clustermap.Redirect{}, false},
		{"MOVED 1 h", clustermap.Redirect{}, false},
		{"MOVED 1 h:0", clustermap.Redirect{}, false},
		{"ERR MOVED 1 h:1", clustermap.Redirect{}, false},
		{"CROSSSLOT Keys in request don't hash to the same slot", clustermap.Redirect{}, false},
	} {
		got, ok := clustermap.ParseRedirect([]byte(tc.msg), "seed")
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("ParseRedirect(%q) = %+v, %v; want %+v, %v", tc.msg, got, ok, tc.want, tc.ok)
		}
	}
}

// TestParseShardsPrefersOnlineMaster: a failed master still listed next to
// the replica that took over does not get the slots.
func TestParseShardsPrefersOnlineMaster(t *testing.T) {
	node := func(port, health string) string {
		return "*8\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n:" + port + "\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$" + fmt.Sprint(len(health)) + "\r\n" + health + "\r\n"
	}
	reply := "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n" + node("7001", "fail") + node("7002", "online")
	m, err := clustermap.ParseShards(parse(t, []byte(reply)), "h")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Master(5); got != "127.0.0.1:7002" {
		t.Fatalf("master %q, want the online one", got)
	}
}

// TestParseShardsTLSPorts: a node announcing a plaintext and a TLS port
// is addressed by the one the client speaks; one announcing only the
// other is addressed by that.
func TestParseShardsTLSPorts(t *testing.T) {
	node := func(fields string, n int) string {
		return "*" + fmt.Sprint(4+2*n) + "\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n" + fields + "$4\r\nrole\r\n$6\r\nmaster\r\n"
	}
	both := node("$4\r\nport\r\n:7000\r\n$8\r\ntls-port\r\n:7100\r\n", 2)
	tlsOnly := node("$8\r\ntls-port\r\n:7100\r\n", 1)
	plainOnly := node("$4\r\nport\r\n:7000\r\n", 1)
	for _, tc := range []struct {
		name, node, plain, tls string
	}{
		{"both", both, "127.0.0.1:7000", "127.0.0.1:7100"},
		{"tls only", tlsOnly, "127.0.0.1:7100", "127.0.0.1:7100"},
		{"plaintext only", plainOnly, "127.0.0.1:7000", "127.0.0.1:7000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply := []byte("*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n" + tc.node)
			for _, p := range []struct {
				parse func(resp.Value, string) (*clustermap.Map, error)
				want  string
			}{{clustermap.ParseShards, tc.plain}, {clustermap.ParseShardsTLS, tc.tls}} {
				m, err := p.parse(parse(t, reply), "h")
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := m.Master(0); got != p.want {
					t.Errorf("master %q, want %q", got, p.want)
				}
			}
		})
	}
}
