package netserve

import (
	"io"
	"net"
	"sync"
	"testing"
)

// servePaced serves ln with an acceptor allowing perSecond failed
// handshakes; every connection is counted as a failed handshake when fail
// is set, and then answered "ok" (so a client that has read it knows its
// failure is counted). It returns the acceptor and a stop function.
func servePaced(t *testing.T, perSecond int, fail bool) (*Acceptor, string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &Acceptor{FailedHandshakesPerSecond: perSecond}
	done := make(chan error, 1)
	go func() {
		done <- a.Serve(ln, func(c net.Conn) bool {
			if fail {
				a.HandshakeFailed()
			}
			_, _ = io.WriteString(c, "ok")
			return false
		})
	}()
	return a, ln.Addr().String(), func() {
		a.Drain()
		a.Wait()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

// dialAll opens n connections at once and reads each one's greeting: every
// connection is served, paced or not.
func dialAll(t *testing.T, addr string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			var b [2]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPacingAfterFailedHandshakes: once connections fail their handshakes
// faster than the rate allows (after the burst), the accept loop waits
// between accepts; every connection is still served in turn.
func TestPacingAfterFailedHandshakes(t *testing.T) {
	a, addr, stop := servePaced(t, 2, true)
	defer stop()
	// Ten failures, each counted before its client reads its greeting:
	// the burst of 2 is spent, and a token comes back every 500 ms.
	dialAll(t, addr, 10)
	// The accept loop may have passed its check before the last failures
	// were counted: the next connection is accepted at once, and the loop
	// must wait before accepting the one after it.
	dialAll(t, addr, 1)
	dialAll(t, addr, 1)
	if a.Paced() == 0 {
		t.Fatal("12 failed handshakes at once, rate 2/s: the accept loop never waited")
	}
}

// TestNoPacingWithoutFailures: connections that complete their handshake
// are never paced, however fast they come (an application connecting per
// request), and a negative rate turns pacing off for failures too.
func TestNoPacingWithoutFailures(t *testing.T) {
	t.Run("good handshakes", func(t *testing.T) {
		a, addr, stop := servePaced(t, 20, false)
		defer stop()
		dialAll(t, addr, 200)
		if n := a.Paced(); n != 0 {
			t.Fatalf("200 good connections: paced %d times, want 0", n)
		}
	})
	t.Run("pacing off", func(t *testing.T) {
		a, addr, stop := servePaced(t, -1, true)
		defer stop()
		dialAll(t, addr, 100)
		if n := a.Paced(); n != 0 {
			t.Fatalf("pacing off: paced %d times, want 0", n)
		}
	})
}
