package pg

import (
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

// Source is the buffered stream a Reader reads from: a *bufio.Reader, or a
// reader that holds no buffer while idle (internal/connbuf).
type Source interface {
	io.Reader
	// Peek returns the next n bytes without consuming them (n at most Size).
	Peek(n int) ([]byte, error)
	// Discard consumes n bytes already peeked.
	Discard(n int) (int, error)
	// Buffered is the number of bytes read and not yet consumed.
	Buffered() int
	// Size is the most Peek can return.
	Size() int
}

// Reader reads typed protocol messages ('Q', 'P', 'D', …) from a buffered
// stream. A message that fits in the source's buffer is returned in place,
// without a copy; a larger one is copied into a buffer of the reader's own,
// which is kept for the next large message (see Shrink). So a session's
// steady state reads without allocating.
type Reader struct {
	src     Source
	maxBody int
	pending int // bytes of the last message still to consume from src
	buf     []byte
	got     int // of a large message being copied into buf: bytes read so far (0: none in progress)
}

// NewReader returns a Reader over src that refuses bodies longer than maxBody bytes.
func NewReader(src Source, maxBody int) *Reader {
	return &Reader{src: src, maxBody: maxBody}
}

// SetMaxBody changes the body limit, e.g. to widen it once a client has authenticated.
func (r *Reader) SetMaxBody(n int) { r.maxBody = n }

// Buffered reports how many bytes are already buffered after the last
// message, so callers can flush their outgoing side only when the peer has
// nothing more queued.
func (r *Reader) Buffered() int { return r.src.Buffered() - r.pending }

// Next reads one message. The returned raw slice holds the whole message,
// type byte and length word included, so it can be forwarded unchanged; body
// is raw[5:]. Both are valid until the next call. A read error (a deadline,
// say) in the middle of a message loses nothing: the next call goes on
// from where it stopped.
func (r *Reader) Next() (typ byte, raw []byte, err error) {
	if r.got > 0 {
		return r.readLarge()
	}
	r.consume()
	hdr, err := r.src.Peek(HeaderLen)
	if err != nil {
		if errors.Is(err, io.EOF) && r.src.Buffered() > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[1:]))) - 4
	if n < 0 {
		return 0, nil, fmt.Errorf("message type %q: %w", hdr[0], ErrBadLength)
	}
	if n > r.maxBody {
		return 0, nil, fmt.Errorf("message type %q of %d bytes (limit %d): %w", hdr[0], n, r.maxBody, ErrMessageTooLarge)
	}
	total := HeaderLen + n
	if total <= r.src.Size() {
		raw, err := r.src.Peek(total)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		r.pending = total
		return raw[0], raw, nil
	}
	if cap(r.buf) < total {
		r.buf = make([]byte, total, max(total, 1024))
	}
	r.buf = r.buf[:total]
	copy(r.buf, hdr)
	_, _ = r.src.Discard(HeaderLen)
	r.got = HeaderLen
	return r.readLarge()
}

// readLarge goes on copying a message too large for the source's buffer.
func (r *Reader) readLarge() (byte, []byte, error) {
	for r.got < len(r.buf) {
		n, err := r.src.Read(r.buf[r.got:])
		r.got += n
		if err != nil && r.got < len(r.buf) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
	}
	r.got = 0
	return r.buf[0], r.buf, nil
}

// Idle reports whether nothing is buffered or half read: the stream is
// between messages with no byte of the next one arrived.
func (r *Reader) Idle() bool { return r.got == 0 && r.Buffered() == 0 }

// consume discards the message returned last, if it was returned in place.
func (r *Reader) consume() {
	if r.pending > 0 {
		_, _ = r.src.Discard(r.pending)
		r.pending = 0
	}
}

// Release consumes the last message, so an idle source can give its
// buffer back; raw slices returned before are no longer valid.
func (r *Reader) Release() { r.consume() }

// Shrink drops a body buffer that grew past keep bytes, so one huge message
// does not pin memory for the rest of a long-lived connection.
func (r *Reader) Shrink(keep int) {
	if cap(r.buf) > keep {
		r.buf = nil
	}
}
