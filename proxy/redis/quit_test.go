package redis_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// TestQuitAfterPipeline: commands pipelined ahead of QUIT in one write all
// run and are all answered, then +OK, then the connection closes, exactly
// as redis-server answers the same bytes: on shared and dedicated upstream
// connections, in RESP2 and RESP3.
func TestQuitAfterPipeline(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 60*time.Second)
	d := p.direct(t)
	for _, tc := range []struct {
		name   string
		proto  int
		cmds   [][]string // sent in one write, QUIT appended; key "k" is the tenant's
		stored bool       // whether k exists afterwards
	}{
		{name: "SET", proto: 2, cmds: [][]string{{"SET", "k", "v"}}, stored: true},
		{name: "SET GET PING", proto: 2, cmds: [][]string{{"SET", "k", "v"}, {"GET", "k"}, {"PING"}}, stored: true},
		{name: "GET PING resp3", proto: 3, cmds: [][]string{{"SET", "k", "v"}, {"GET", "k"}, {"PING"}}, stored: true},
		{name: "INCR x20", proto: 2, cmds: repeat([]string{"INCR", "k"}, 20), stored: true},
		// Dedicated upstream connections.
		{name: "MULTI, then QUIT discards it", proto: 2, cmds: [][]string{{"MULTI"}, {"SET", "k", "v"}}},
		{name: "MULTI EXEC", proto: 2, cmds: [][]string{{"MULTI"}, {"SET", "k", "v"}, {"EXEC"}}, stored: true},
		{name: "SUBSCRIBE", proto: 2, cmds: [][]string{{"SUBSCRIBE", "ch"}}},
		{name: "SUBSCRIBE resp3", proto: 3, cmds: [][]string{{"SUBSCRIBE", "ch"}, {"SET", "k", "v"}}, stored: true},
		{name: "BLPOP timing out", proto: 2, cmds: [][]string{{"BLPOP", "nolist", "0.2"}, {"SET", "k", "v"}}, stored: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmds := append(append([][]string(nil), tc.cmds...), []string{"QUIT"})
			// What redis-server answers, with the tenant's key name.
			if err := d.Del(ctx, "t:acme:k").Err(); err != nil {
				t.Fatal(err)
			}
			hello := []string{"HELLO", "3"}
			if tc.proto == 2 {
				hello = []string{"PING"}
			}
			want := quitPipeline(t, p.redis, hello, rename(cmds, "k", "t:acme:k"))
			if n, err := d.Exists(ctx, "t:acme:k").Result(); err != nil || (n == 1) != tc.stored {
				t.Fatalf("direct: k exists %d %v, want %v", n, err, tc.stored)
			}
			if err := d.Del(ctx, "t:acme:k").Err(); err != nil {
				t.Fatal(err)
			}
			// The same through the proxy.
			auth := []string{"HELLO", "3", "AUTH", "acme", acmeSecret}
			if tc.proto == 2 {
				auth = []string{"AUTH", "acme", acmeSecret}
			}
			got := quitPipeline(t, p.addr, auth, cmds)
			if strings.Join(got, "") != strings.Join(want, "") {
				t.Fatalf("replies through the proxy:\n%q\nredis-server's:\n%q", got, want)
			}
			if n, err := d.Exists(ctx, "t:acme:k").Result(); err != nil || (n == 1) != tc.stored {
				t.Fatalf("through the proxy: k exists %d %v, want %v", n, err, tc.stored)
			}
		})
	}
	// AUTH in the same write as the pipeline and its QUIT.
	t.Run("AUTH SET QUIT in one write", func(t *testing.T) {
		if err := d.Del(ctx, "t:acme:k").Err(); err != nil {
			t.Fatal(err)
		}
		got := quitPipeline(t, p.addr, nil, [][]string{{"AUTH", "acme", acmeSecret}, {"SET", "k", "v"}, {"QUIT"}})
		if want := []string{"+OK\r\n", "+OK\r\n", "+OK\r\n"}; strings.Join(got, "") != strings.Join(want, "") {
			t.Fatalf("replies %q, want %q", got, want)
		}
		if v, err := d.Get(ctx, "t:acme:k").Result(); err != nil || v != "v" {
			t.Fatalf("k = %q %v", v, err)
		}
	})
}

// quitPipeline connects to addr, sends first (if any) and reads its reply,
// then writes cmds in one write and returns every reply read until the
// server closes the connection.
func quitPipeline(t *testing.T, addr string, first []string, cmds [][]string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	rr := resp.NewReplyReader(c, 16<<10)
	if first != nil {
		if _, err := c.Write(command(first)); err != nil {
			t.Fatal(err)
		}
		rep, err := rr.ReadReply()
		if err != nil {
			t.Fatal(err)
		}
		if rep.Root().Type() == resp.TypeSimpleError {
			t.Fatalf("%s: %s", first[0], rep.Raw())
		}
	}
	var all []byte
	for _, cmd := range cmds {
		all = append(all, command(cmd)...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	var replies []string
	for {
		rep, err := rr.ReadReply()
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return replies
		}
		if err != nil {
			t.Fatalf("after %q: %v", replies, err)
		}
		replies = append(replies, string(rep.Raw()))
	}
}

func command(args []string) []byte {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	return resp.AppendCommand(nil, b)
}

func repeat(cmd []string, n int) [][]string {
	out := make([][]string, n)
	for i := range out {
		out[i] = cmd
	}
	return out
}

// rename replaces the argument from with to in every command.
func rename(cmds [][]string, from, to string) [][]string {
	out := make([][]string, len(cmds))
	for i, cmd := range cmds {
		out[i] = append([]string(nil), cmd...)
		for j, a := range out[i] {
			if j > 0 && a == from {
				out[i][j] = to
			}
		}
	}
	return out
}
