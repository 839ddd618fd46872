package pg

import (
	"net"
	"testing"
)

// TestIsLocal: which client addresses count as this host's, where a
// cleartext password cannot be sniffed on the network.
func TestIsLocal(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr net.Addr
		want bool
	}{
		{"IPv4 loopback", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5}, true},
		{"IPv4 loopback range", &net.TCPAddr{IP: net.IPv4(127, 3, 2, 1), Port: 5}, true},
		{"IPv6 loopback", &net.TCPAddr{IP: net.IPv6loopback, Port: 5}, true},
		{"IPv4-mapped loopback", &net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 5}, true},
		{"unix socket", &net.UnixAddr{Name: "@", Net: "unix"}, true},
		{"private address", &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 5}, false},
		{"unspecified", &net.TCPAddr{IP: net.IPv4zero, Port: 5}, false},
		{"pod neighbour IPv6", &net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 5}, false},
		{"pipe", pipeAddr{}, false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := isLocal(tc.addr); got != tc.want {
				t.Fatalf("isLocal(%v) = %v", tc.addr, got)
			}
		})
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
