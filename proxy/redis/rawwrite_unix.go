//go:build unix

package redis

import (
	"net"
	"syscall"
)

// rawWriter writes to a socket without waiting for it to become writable:
// the write(2) that net.Conn.Write would block on is tried once, and what
// the socket does not take is left to the caller. It goes through the
// connection's syscall.RawConn, so the descriptor cannot be closed (and
// its number reused) during the call. Not safe for concurrent use.
type rawWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool // w.write, bound once: no allocation per call
	b   []byte
	n   int
	err error
}

// newRawWriter returns a rawWriter for c, or nil when c exposes no
// descriptor (then every write goes through the drainer).
func newRawWriter(c net.Conn) *rawWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{rc: rc}
	w.fn = w.write
	return w
}

func (w *rawWriter) write(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.b)
		if err == syscall.EINTR {
			continue
		}
		w.n, w.err = n, err
		return true // never wait for the poller
	}
}

// writeNow writes as much of b as the socket takes now. A full socket is
// not an error: it returns how much was written.
func (w *rawWriter) writeNow(b []byte) (int, error) {
	w.b, w.n, w.err = b, 0, nil
	err := w.rc.Write(w.fn)
	w.b = nil
	if err != nil {
		return 0, err
	}
	if w.err == syscall.EAGAIN {
		return 0, nil
	}
	return max(w.n, 0), w.err
}
