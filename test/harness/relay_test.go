package harness_test

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/test/harness"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// roundTrip writes msg and reads it back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, len(msg))
	n, err := io.ReadFull(c, b)
	return string(b[:n]), err
}

func TestRelayFaults(t *testing.T) {
	r := harness.NewRelay(t, echoServer(t))
	dial := func() net.Conn {
		c, err := net.Dial("tcp", r.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := dial()
	if got, err := roundTrip(c, "pass", time.Second); got != "pass" || err != nil {
		t.Fatalf("pass: %q %v", got, err)
	}

	// Stall: nothing comes back, and it all arrives once lifted.
	r.SetFault(harness.Stall)
	if got, err := roundTrip(c, "held", 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stall: %q %v", got, err)
	}
	stalledNew := dial() // accepted, never answered
	_, _ = stalledNew.Write([]byte("new"))
	r.SetFault(harness.Pass)
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "held" {
		t.Fatalf("after stall: %q %v", b, err)
	}
	_ = stalledNew.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadFull(stalledNew, b[:3]); err != nil || string(b[:3]) != "new" {
		t.Fatalf("connection accepted during the stall: %q %v", b[:3], err)
	}

	// Blackhole: dropped for good.
	r.SetFault(harness.Blackhole)
	if _, err := roundTrip(c, "lost", 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blackhole: %v", err)
	}
	r.SetFault(harness.Pass)
	if got, err := roundTrip(c, "back", time.Second); got != "back" || err != nil {
		t.Fatalf("after blackhole: %q %v (the dropped bytes must not arrive)", got, err)
	}

	// Delay.
	r.SetDelay(50 * time.Millisecond)
	r.SetFault(harness.Delay)
	start := time.Now()
	if got, err := roundTrip(c, "slow", 2*time.Second); got != "slow" || err != nil {
		t.Fatalf("delay: %q %v", got, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("delay: round trip took %v, want two 50ms delays", d)
	}

	// Half-close: the client side reads EOF.
	r.SetFault(harness.HalfClose)
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(b); !errors.Is(err, io.EOF) {
		t.Fatalf("half-close: %v, want EOF", err)
	}

	// Reset: open and new connections are reset.
	r.SetFault(harness.Pass)
	c2 := dial()
	if got, err := roundTrip(c2, "ok", time.Second); got != "ok" || err != nil {
		t.Fatalf("pass again: %q %v", got, err)
	}
	r.SetFault(harness.Reset)
	_ = c2.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c2.Read(b); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reset: %v, want ECONNRESET", err)
	}
	// A new connection is reset as soon as the relay accepts it: the reset
	// can reach the dial itself on loopback, or the first read.
	c3, err := net.Dial("tcp", r.Addr())
	if err == nil {
		t.Cleanup(func() { c3.Close() })
		_ = c3.SetReadDeadline(time.Now().Add(time.Second))
		_, err = c3.Read(b)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reset of a new connection: %v, want ECONNRESET", err)
	}
	harness.Eventually(t, 5*time.Second, func() error {
		if n := r.Conns(); n != 0 {
			return errors.New("relay still holds connections")
		}
		return nil
	})
}
