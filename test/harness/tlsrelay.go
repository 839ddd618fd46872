package harness

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
)

// TLSRelay terminates TLS in front of a plaintext server: it takes TLS
// connections with a Go server's configuration, and relays their bytes to
// upstream in clear. It records what each handshake negotiated and what
// the client offered, so that a test can see which key exchanges a client
// it does not control (pgconn, go-redis) offers and settles on with a
// server that has every group Go has. With postgres set it first answers
// a PostgreSQL SSLRequest with 'S', as a server would.
type TLSRelay struct {
	Addr string

	mu      sync.Mutex
	states  []tls.ConnectionState
	offered [][]tls.CurveID
}

// StartTLSRelay relays to upstream until the test ends.
func StartTLSRelay(t testing.TB, cfg *tls.Config, upstream string, postgres bool) *TLSRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &TLSRelay{Addr: ln.Addr().String()}
	cfg = cfg.Clone()
	inner := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		r.mu.Lock()
		r.offered = append(r.offered, slices.Clone(h.SupportedCurves))
		r.mu.Unlock()
		if inner != nil {
			return inner(h)
		}
		return nil, nil
	}
	var wg sync.WaitGroup
	var connMu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		connMu.Lock()
		defer connMu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer track(c, false)
				r.serve(c, cfg, upstream, postgres)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		connMu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		connMu.Unlock()
		wg.Wait()
	})
	return r
}

func (r *TLSRelay) serve(raw net.Conn, cfg *tls.Config, upstream string, postgres bool) {
	defer raw.Close()
	br := bufio.NewReader(raw)
	if postgres {
		var hdr [8]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil || binary.BigEndian.Uint32(hdr[4:]) != 80877103 {
			return // not an SSLRequest
		}
		if _, err := raw.Write([]byte{'S'}); err != nil {
			return
		}
	}
	tc := tls.Server(bufferedConn{raw, br}, cfg)
	if err := tc.Handshake(); err != nil {
		return
	}
	r.mu.Lock()
	r.states = append(r.states, tc.ConnectionState())
	r.mu.Unlock()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, tc)
		_ = up.Close()
		close(done)
	}()
	_, _ = io.Copy(tc, up)
	_ = raw.Close()
	<-done
}

// States are the TLS states of the handshakes so far.
func (r *TLSRelay) States() []tls.ConnectionState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.states)
}

// Offered are the key exchanges each client offered, in its order.
func (r *TLSRelay) Offered() [][]tls.CurveID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.offered)
}

// bufferedConn reads through the bufio.Reader that read the SSLRequest.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
