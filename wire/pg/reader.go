package pg

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrMessageTooLarge is returned when a peer announces a message body longer
// than the reader's limit. The connection cannot be resynchronised after it.
var ErrMessageTooLarge = errors.New("message exceeds the size limit")

// ErrBadLength is returned for a length word smaller than the length word itself.
var ErrBadLength = errors.New("invalid message length")

// Reader reads typed protocol messages ('Q', 'P', 'D', …) from a buffered
// stream. It allocates only when a body is larger than any seen before, so a
// session's steady state reads without allocating.
type Reader struct {
	br      *bufio.Reader
	maxBody int
	hdr     [5]byte
	buf     []byte
}

// NewReader returns a Reader over br that refuses bodies longer than maxBody bytes.
func NewReader(br *bufio.Reader, maxBody int) *Reader {
	return &Reader{br: br, maxBody: maxBody}
}

// SetMaxBody changes the body limit, e.g. to widen it once a client has authenticated.
func (r *Reader) SetMaxBody(n int) { r.maxBody = n }

// Buffered reports how many bytes are already buffered, so callers can flush
// their outgoing side only when the peer has nothing more queued.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Next reads one message. The returned raw slice holds the whole message,
// type byte and length word included, so it can be forwarded unchanged; body
// is raw[5:]. Both are valid until the next call.
func (r *Reader) Next() (typ byte, raw []byte, err error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(r.hdr[1:]))) - 4
	if n < 0 {
		return 0, nil, fmt.Errorf("message type %q: %w", r.hdr[0], ErrBadLength)
	}
	if n > r.maxBody {
		return 0, nil, fmt.Errorf("message type %q of %d bytes (limit %d): %w", r.hdr[0], n, r.maxBody, ErrMessageTooLarge)
	}
	total := 5 + n
	if cap(r.buf) < total {
		r.buf = make([]byte, total, max(total, 1024))
	}
	r.buf = r.buf[:total]
	copy(r.buf, r.hdr[:])
	if _, err := io.ReadFull(r.br, r.buf[5:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return r.hdr[0], r.buf, nil
}

// Shrink drops a body buffer that grew past keep bytes, so one huge message
// does not pin memory for the rest of a long-lived connection.
func (r *Reader) Shrink(keep int) {
	if cap(r.buf) > keep {
		r.buf = nil
	}
}
