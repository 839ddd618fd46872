// Package connbuf holds buffered I/O for client connections that holds no
// buffer while the connection is idle, as PgBouncer's pooled pkt_buf does: a
// sidecar keeps thousands of mostly idle client connections, and a few KiB
// of buffers each would be most of its memory.
//
// A Reader takes a buffer from a shared pool when bytes arrive and gives it
// back once everything read has been consumed; on a plain TCP connection it
// waits for the next bytes without holding one (syscall.RawConn), on TLS it
// must lend tls.Conn a buffer to read into. A Writer takes a buffer for the
// bytes of one batch and gives it back when it flushes.
package connbuf

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/tenantguard/tenantguard/internal/rawio"
)

// Size is the size of the pooled buffers: one read takes up to this much,
// one flush writes at most this much at a time.
const Size = 32 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, Size); return &b }}

func get() *[]byte { return pool.Get().(*[]byte) }

func put(b *[]byte) {
	if cap(*b) == Size {
		*b = (*b)[:Size]
		pool.Put(b)
	}
}

// Reader is a buffered reader over a connection with bufio.Reader's Peek,
// Discard, Read and Buffered, that holds no buffer while nothing is
// buffered. A Peek longer than Size takes a buffer of its own, given back
// once consumed.
type Reader struct {
	conn net.Conn
	raw  syscall.RawConn // nil: read through conn, lending it the buffer
	buf  *[]byte         // nil while nothing is buffered
	r, w int
	// readFn is readRaw bound once (a closure per read would allocate);
	// it leaves its outcome in n and rerr.
	readFn func(fd uintptr) bool
	n      int
	rerr   error
}

// NewReader returns a Reader of c.
func NewReader(c net.Conn) *Reader {
	r := &Reader{conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
			r.readFn = r.readRaw
		}
	}
	return r
}

// Size is the most a Peek can return without a buffer of its own.
func (r *Reader) Size() int { return Size }

// Buffered is the number of bytes read and not yet consumed.
func (r *Reader) Buffered() int { return r.w - r.r }

// Holding reports whether the reader holds a buffer.
func (r *Reader) Holding() bool { return r.buf != nil }

// Peek returns the next n bytes without consuming them, reading as many as
// needed; the slice is valid until the next call.
func (r *Reader) Peek(n int) ([]byte, error) {
	for r.w-r.r < n {
		if err := r.fill(n); err != nil {
			return nil, err
		}
	}
	return (*r.buf)[r.r : r.r+n], nil
}

// Discard skips n buffered bytes (at most Buffered()).
func (r *Reader) Discard(n int) (int, error) {
	n = min(n, r.w-r.r)
	r.r += n
	if r.r == r.w {
		r.release()
	}
	return n, nil
}

// Read reads into p: buffered bytes first, else straight from the
// connection when p is large.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.r == r.w {
		if err := r.fill(1); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*r.buf)[r.r:r.w])
	_, _ = r.Discard(n)
	return n, nil
}

// fill reads at least one more byte, with room for a Peek of need bytes.
func (r *Reader) fill(need int) error {
	r.reserve(need)
	var n int
	var err error
	if r.raw == nil {
		n, err = r.conn.Read((*r.buf)[r.w:])
	} else {
		n, err = r.rawRead()
	}
	r.w += n
	if n > 0 {
		return nil
	}
	if r.r == r.w {
		r.release()
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// rawRead reads what is there, waiting for readiness with no buffer held
// when nothing is buffered: the buffer is taken only once bytes can be read.
func (r *Reader) rawRead() (int, error) {
	if err := r.raw.Read(r.readFn); err != nil {
		return 0, err
	}
	n, err := r.n, r.rerr
	r.n, r.rerr = 0, nil
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// readRaw is syscall.RawConn.Read's callback: one read(2), or false to
// wait for readiness (with the buffer given back if nothing is buffered).
func (r *Reader) readRaw(fd uintptr) bool {
	if r.buf == nil {
		r.buf = get()
	}
	for {
		r.n, r.rerr = rawio.Read(int(fd), (*r.buf)[r.w:])
		if r.rerr != syscall.EINTR {
			break
		}
	}
	if r.rerr == syscall.EAGAIN {
		if r.r == r.w {
			r.release() // wait with nothing held
		}
		return false
	}
	if r.n < 0 {
		r.n = 0
	}
	return true
}

// reserve makes room for need bytes from r.r on.
func (r *Reader) reserve(need int) {
	if r.buf == nil {
		if need <= Size {
			r.buf = get()
		} else {
			b := make([]byte, need)
			r.buf = &b
		}
		r.r, r.w = 0, 0
		return
	}
	buf := *r.buf
	if len(buf)-r.r >= need && r.w < len(buf) {
		return
	}
	if need <= len(buf) {
		// Slide what is buffered to the front.
		copy(buf, buf[r.r:r.w])
		r.w -= r.r
		r.r = 0
		return
	}
	nb := make([]byte, need)
	copy(nb, buf[r.r:r.w])
	old := r.buf
	r.buf = &nb
	r.w -= r.r
	r.r = 0
	put(old)
}

func (r *Reader) release() {
	if r.buf != nil {
		put(r.buf)
		r.buf = nil
	}
	r.r, r.w = 0, 0
}

// Writer buffers writes to a connection, taking a pooled buffer for the
// bytes of one batch and giving it back when it flushes.
type Writer struct {
	w   io.Writer
	buf *[]byte
	n   int
	err error
}

// NewWriter returns a Writer to w. Give it a Raw connection for writes
// without a hand-off of the P.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// rawWriter writes a plain socket with raw write(2)s (see package rawio),
// waiting for room through the netpoller (and the connection's write
// deadline) when the socket is full. It is Raw's Write.
type rawWriter struct {
	c  net.Conn
	rc syscall.RawConn
	mu sync.Mutex
	// fn is write bound once (a closure per call would allocate); it
	// writes p from n on and leaves an error in err.
	fn  func(fd uintptr) bool
	p   []byte
	n   int
	err error
}

func (w *rawWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.p, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.fn)
	n := w.n
	if err == nil {
		err = w.err
	}
	w.p, w.err = nil, nil
	if err != nil {
		// As net.Conn reports it.
		return n, &net.OpError{Op: "write", Net: w.c.LocalAddr().Network(), Source: w.c.LocalAddr(), Addr: w.c.RemoteAddr(), Err: err}
	}
	return n, nil
}

// write is syscall.RawConn.Write's callback: write(2) until p is written
// or the socket is full (false: wait for room).
func (w *rawWriter) write(fd uintptr) bool {
	for w.n < len(w.p) {
		n, err := rawio.Write(int(fd), w.p[w.n:])
		switch {
		case n > 0:
			w.n += n
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return false
		case err == nil:
			w.err = io.ErrShortWrite // write(2) took nothing and gave no reason
			return true
		default:
			w.err = os.NewSyscallError("write", err)
			return true
		}
	}
	return true
}

// Buffered is the number of bytes written and not yet flushed.
func (w *Writer) Buffered() int { return w.n }

// Write buffers p, writing out full buffers as it goes.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	total := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			if w.n == 0 && len(p) >= Size {
				// Larger than a buffer and nothing pending: no copy.
				_, err := w.w.Write(p)
				w.err = err
				return total - len(p), err
			}
			w.buf = get()
		}
		c := copy((*w.buf)[w.n:], p)
		w.n += c
		p = p[c:]
		if w.n == Size {
			if err := w.flush(false); err != nil {
				return total - len(p), err
			}
		}
	}
	return total, nil
}

// Flush writes what is buffered and gives the buffer back.
func (w *Writer) Flush() error { return w.flush(true) }

func (w *Writer) flush(release bool) error {
	if w.err != nil {
		return w.err
	}
	if w.n > 0 {
		if _, err := w.w.Write((*w.buf)[:w.n]); err != nil {
			w.err = err
			return err
		}
		w.n = 0
	}
	if release && w.buf != nil {
		put(w.buf)
		w.buf = nil
	}
	return nil
}

// Raw returns c with its Read and Write made as raw system calls (see
// package rawio) when c is a plain socket, waiting for readiness through
// the netpoller and c's deadlines as net.Conn does; otherwise c. Reads and
// errors are as net.Conn's: io.EOF at the end, *net.OpError otherwise.
func Raw(c net.Conn) net.Conn {
	if _, ok := c.(*rawConn); ok {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	w := &rawWriter{c: c, rc: raw}
	w.fn = w.write
	rc := &rawConn{Conn: c, w: w}
	rc.fn = rc.read
	return rc
}

type rawConn struct {
	net.Conn
	w  *rawWriter
	mu sync.Mutex // one Read at a time, as fn's fields are shared
	// fn is read bound once; it reads into p and leaves n and err.
	fn  func(fd uintptr) bool
	p   []byte
	n   int
	err error
}

func (c *rawConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.p, c.n, c.err = p, 0, nil
	err := c.w.rc.Read(c.fn)
	n := c.n
	if err == nil {
		err = c.err
	}
	c.p, c.err = nil, nil
	switch {
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// read is syscall.RawConn.Read's callback: one read(2), or false to wait
// for readiness.
func (c *rawConn) read(fd uintptr) bool {
	for {
		n, err := rawio.Read(int(fd), c.p)
		switch err {
		case nil:
			c.n = n
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.err = os.NewSyscallError("read", err)
			return true
		}
	}
}

// SyscallConn is the socket's, so that Reader and descriptor users see
// through the wrapper.
func (c *rawConn) SyscallConn() (syscall.RawConn, error) { return c.w.rc, nil }
