package redis_test

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestLoopServesAndHandsBack: on Linux an authenticated session on the
// shared connections is served by the event loop; commands that may wait
// (emulated DBSIZE, AUTH, HELLO, CLIENT, MULTI) pipelined between fast ones
// go back to the session's goroutine and the session returns to the loop,
// with every reply in order. Many clients do so at once.
func TestLoopServesAndHandsBack(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the event loop is Linux only")
	}
	p := startProxy(t, nil)
	const clients = 8
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	rs := make([]*rawClient, clients)
	for i := range rs {
		rs[i] = authed(t, p, "acme", acmeSecret)
		if got := rs[i].do("SET", fmt.Sprintf("k%d", i), "v"); got != "+OK\r\n" {
			t.Fatalf("SET: %q", got)
		}
	}
	waitLoopSessions(t, p, clients)
	for i, r := range rs {
		wg.Add(1)
		go func(i int, r *rawClient) {
			defer wg.Done()
			k := fmt.Sprintf("k%d", i)
			cmds := [][]string{
				{"GET", k}, {"DBSIZE"}, {"INCR", k + "n"}, {"CLIENT", "SETNAME", "c" + k}, {"GET", k},
				{"AUTH", "acme", acmeSecret}, {"PING"}, {"HELLO", "2"}, {"CLIENT", "GETNAME"},
				{"MULTI"}, {"GET", k}, {"EXEC"}, {"GET", k},
			}
			var all []byte
			for round := 0; round < 20; round++ {
				all = all[:0]
				for _, c := range cmds {
					all = append(all, command(c)...)
				}
				if _, err := r.c.Write(all); err != nil {
					errs <- err
					return
				}
				var got []string
				for range cmds {
					rep := r.reply()
					if strings.HasPrefix(rep, "*14\r\n") { // HELLO's map as an array
						rep = "<hello>"
					}
					got = append(got, rep)
				}
				want := []string{"$1\r\nv\r\n", ":" + fmt.Sprint(clients) + "\r\n", fmt.Sprintf(":%d\r\n", round+1), "+OK\r\n", "$1\r\nv\r\n",
					"+OK\r\n", "+PONG\r\n", "<hello>", "$" + fmt.Sprint(len(k)+1) + "\r\nc" + k + "\r\n",
					"+OK\r\n", "+QUEUED\r\n", "*1\r\n$1\r\nv\r\n", "$1\r\nv\r\n"}
				// DBSIZE counts every client's keys: k0..k7 and their counters.
				want[1] = ""
				got[1] = ""
				if strings.Join(got, "|") != strings.Join(want, "|") {
					errs <- fmt.Errorf("client %d round %d:\n got %q\nwant %q", i, round, got, want)
					return
				}
			}
		}(i, r)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// MULTI moved them to connections of their own: they serve themselves.
	if n := p.srv.LoopSessions(); n != 0 {
		t.Fatalf("%d sessions on the loop after MULTI", n)
	}
}

func waitLoopSessions(t *testing.T, p *proxy, n int) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, func() error {
		if got := p.srv.LoopSessions(); got != n {
			return fmt.Errorf("%d sessions on the loop, want %d", got, n)
		}
		return nil
	})
}

// TestNoDescriptorLeak: connections the proxy closes itself are closed,
// not just shut down (which is how it ends connections someone else
// reads): here the connection each emulated DBSIZE scans on. The GC is off
// so that finalizers cannot close what was leaked.
func TestNoDescriptorLeak(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts /proc/self/fd")
	}
	p := startProxy(t, nil)
	r := authed(t, p, "acme", acmeSecret)
	openFDs := func() int {
		fds, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(fds)
	}
	expect(t, r.do("PING"), "+PONG\r\n") // the shared connection is dialled
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := openFDs()
	for i := 0; i < 50; i++ {
		if got := r.do("DBSIZE"); !strings.HasPrefix(got, ":") {
			t.Fatalf("DBSIZE: %q", got)
		}
	}
	if after := openFDs(); after > before+2 {
		t.Fatalf("%d descriptors open after 50 DBSIZE, %d before", after, before)
	}
}
