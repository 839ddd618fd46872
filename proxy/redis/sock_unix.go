//go:build unix

package redis

import (
	"io"
	"net"
	"syscall"

	"github.com/tenantguard/tenantguard/internal/rawio"
)

// sock does what net.Conn cannot: read and write a socket without waiting
// for it to become ready (the read(2) or write(2) that net.Conn would park
// on is tried once), and shut it down without closing it. Everything goes
// through the connection's syscall.RawConn, so the descriptor cannot be
// closed (and its number reused) during a call. Reads and writes may run
// at once on different goroutines, but not two of either.
type sock struct {
	rc syscall.RawConn

	writeFn func(fd uintptr) bool // s.write, bound once: no allocation per call
	wb      []byte
	wn      int
	werr    error

	readFn func(fd uintptr) bool
	rb     []byte
	rn     int
	rerr   error
}

// newSock returns a sock for c, or nil when c has no descriptor (then the
// client only uses net.Conn's methods).
func newSock(c net.Conn) *sock {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sock{rc: rc}
	s.writeFn, s.readFn = s.write, s.read
	return s
}

func (s *sock) write(fd uintptr) bool {
	for {
		n, err := rawio.Write(int(fd), s.wb)
		if err == syscall.EINTR {
			continue
		}
		s.wn, s.werr = n, err
		return true // never wait for the poller
	}
}

// writeNow writes as much of b as the socket takes now. A full socket is
// not an error: it returns how much was written.
func (s *sock) writeNow(b []byte) (int, error) {
	s.wb, s.wn, s.werr = b, 0, nil
	err := s.rc.Write(s.writeFn)
	s.wb = nil
	if err != nil {
		return 0, err
	}
	if s.werr == syscall.EAGAIN {
		return 0, nil
	}
	return max(s.wn, 0), s.werr
}

func (s *sock) read(fd uintptr) bool {
	for {
		n, err := rawio.Read(int(fd), s.rb)
		if err == syscall.EINTR {
			continue
		}
		s.rn, s.rerr = n, err
		return true
	}
}

// readNow reads what the socket holds now into p: errWouldBlock if
// nothing, io.EOF once the peer has closed (or the socket was shut down).
func (s *sock) readNow(p []byte) (int, error) {
	s.rb, s.rn, s.rerr = p, 0, nil
	err := s.rc.Read(s.readFn)
	s.rb = nil
	switch {
	case err != nil:
		return 0, err
	case s.rerr == syscall.EAGAIN:
		return 0, errWouldBlock
	case s.rerr != nil:
		return 0, s.rerr
	case s.rn == 0:
		return 0, io.EOF
	}
	return s.rn, nil
}

// shutdown shuts the socket down both ways without closing it: whoever
// reads it sees EOF, whoever writes it an error, and the peer sees the
// connection closed. Its owner closes it. It reports false when the
// socket is closed already.
func (s *sock) shutdown() bool {
	err := s.rc.Control(func(fd uintptr) {
		_ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR)
	})
	return err == nil
}

// control runs f with the descriptor, unless the socket is closed.
func (s *sock) control(f func(fd int)) error {
	return s.rc.Control(func(fd uintptr) { f(int(fd)) })
}

// peekByte waits (up to c's read deadline) for the first byte of c and
// returns it without taking it from the socket, so c is served unchanged
// afterwards, event loop included. A connection without a descriptor has
// its byte read and given back by a wrapper (peekByteByRead).
func peekByte(c net.Conn) (byte, net.Conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peekByteByRead(c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peekByteByRead(c)
	}
	var (
		b    [1]byte
		n    int
		rerr error
	)
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
			if rerr == syscall.EINTR {
				continue
			}
			return rerr != syscall.EAGAIN // false: wait until readable
		}
	})
	switch {
	case err != nil:
		return 0, c, err
	case rerr != nil:
		return 0, c, rerr
	case n == 0:
		return 0, c, io.EOF
	}
	return b[0], c, nil
}
