package resp

import "io"

// defaultBufSize is redis-server's PROTO_IOBUF_LEN.
const defaultBufSize = 16 << 10

// buffer is a growable read buffer. Parsers keep their state as offsets from
// r, the start of the message being parsed, so fill may move the unread
// bytes to the front or into a larger array.
type buffer struct {
	rd   io.Reader
	buf  []byte // len(buf) is the capacity in use
	r, w int    // unread bytes are buf[r:w]
	size int    // the size Shrink returns to
}

func newBuffer(rd io.Reader, size int) buffer {
	if size <= 0 {
		size = defaultBufSize
	}
	size = max(size, 16)
	return buffer{rd: rd, buf: make([]byte, size), size: size}
}

// unread returns the bytes read but not yet consumed.
func (b *buffer) unread() []byte { return b.buf[b.r:b.w] }

// fill reads until at least want bytes are unread, growing the buffer to at
// most max(want, limit) bytes. It returns io.ErrUnexpectedEOF if the stream
// ends with some bytes unread but fewer than want, and io.EOF if it ends
// with none.
func (b *buffer) fill(want, limit int) error {
	if b.w-b.r >= want {
		return nil
	}
	if len(b.buf)-b.r < want || (b.r > 0 && len(b.buf)-b.w < len(b.buf)/8) {
		if want <= len(b.buf) {
			b.w = copy(b.buf, b.buf[b.r:b.w])
			b.r = 0
		} else {
			n := max(want, min(2*len(b.buf), limit))
			nb := make([]byte, n)
			b.w = copy(nb, b.buf[b.r:b.w])
			b.r = 0
			b.buf = nb
		}
	}
	for empty := 0; b.w-b.r < want; {
		n, err := b.rd.Read(b.buf[b.w:])
		if n < 0 || n > len(b.buf)-b.w {
			return io.ErrNoProgress // a broken io.Reader
		}
		b.w += n
		if b.w-b.r >= want {
			return nil
		}
		if err != nil {
			if err == io.EOF && b.w > b.r {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if n == 0 {
			if empty++; empty == 100 {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// shrink replaces a buffer grown past its initial size with one of that
// size, keeping the unread bytes (and growing if they need more).
func (b *buffer) shrink() {
	if len(b.buf) <= b.size {
		return
	}
	nb := make([]byte, max(b.size, b.w-b.r))
	b.w = copy(nb, b.buf[b.r:b.w])
	b.r = 0
	b.buf = nb
}

// reset discards buffered bytes and reads from rd from now on.
func (b *buffer) reset(rd io.Reader) {
	b.rd = rd
	b.r, b.w = 0, 0
}
