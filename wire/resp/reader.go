package resp

import (
	"bytes"
	"io"
)

// Command is one client command.
type Command struct {
	// Args are the command name and its arguments. They point into the
	// Reader's buffer and are valid until the next call on the Reader; an
	// inline command's arguments are unescaped in place. Each has its
	// capacity capped at its length, so appending to one copies it.
	Args [][]byte
	// Inline reports that the command came as an inline line rather than
	// as a multibulk "*<count>" array.
	Inline bool
}

// Reader reads client commands (multibulk and inline) as redis-server does,
// without allocating once its buffer and argument slice have grown to the
// largest command seen. It is not safe for concurrent use.
type Reader struct {
	b     buffer
	lim   Limits
	args  [][]byte
	spans []int // start and end offsets of parsed arguments, relative to b.r
	err   error // sticky ProtocolError

	// State of a command split across reads, so a read error such as a
	// deadline can be retried and long inputs are scanned only once.
	inMulti bool
	left    int64 // arguments still to parse
	bulk    int64 // length of the argument whose header was parsed, or -1
	pos     int   // next unparsed byte, relative to b.r
	seen    int   // bytes from b.r already searched for a line end
}

// NewReader returns a Reader over rd with a buffer of size bytes (16 KiB if
// size <= 0) and DefaultLimits.
func NewReader(rd io.Reader, size int) *Reader {
	return &Reader{b: newBuffer(rd, size), lim: DefaultLimits(), bulk: -1}
}

// SetLimits changes the limits from the next command on, e.g. from
// PreAuthLimits to DefaultLimits once the client has authenticated.
func (r *Reader) SetLimits(l Limits) { r.lim = l.withDefaults() }

// Limits returns the limits in effect, defaults filled in.
func (r *Reader) Limits() Limits { return r.lim }

// Buffered returns how many bytes have been read from the connection but not
// yet returned as commands: a proxy can delay flushing its replies while the
// client has more pipelined commands queued.
func (r *Reader) Buffered() int { return r.b.w - r.b.r }

// Shrink releases a buffer or argument slice that grew past its initial size
// for a large command. It invalidates the last Command's arguments.
func (r *Reader) Shrink() {
	r.b.shrink()
	if cap(r.args) > 1024 {
		r.args = nil
	}
	if cap(r.spans) > 2048 && len(r.spans) <= 64 { // keep a command in progress
		r.spans = append(make([]int, 0, 64), r.spans...)
	}
}

// Reset makes the Reader read from rd, discarding buffered bytes, state and
// any sticky error; limits are kept.
func (r *Reader) Reset(rd io.Reader) {
	r.b.reset(rd)
	r.err = nil
	r.resetState()
}

func (r *Reader) resetState() {
	r.inMulti, r.left, r.bulk, r.pos, r.seen = false, 0, -1, 0, 0
	r.spans = r.spans[:0]
}

// ReadCommand returns the next command. Empty inline lines and multibulk
// arrays with a count of zero or less are skipped, as redis-server does.
//
// It returns io.EOF if the stream ends between commands and
// io.ErrUnexpectedEOF if it ends inside one. Other read errors (a deadline,
// say) are returned as they are, and the next call resumes the command in
// progress. A *ProtocolError means the client broke the protocol: reply with
// it and close. ErrQueryTooLarge means the command exceeded MaxQueryLen:
// close without a reply.
func (r *Reader) ReadCommand() (Command, error) {
	if r.err != nil {
		return Command{}, r.err
	}
	for {
		if !r.inMulti && r.b.w == r.b.r {
			if err := r.b.fill(1, r.lim.MaxQueryLen); err != nil {
				return Command{}, err
			}
		}
		var (
			cmd  Command
			done bool
			err  error
		)
		if r.inMulti || r.b.buf[r.b.r] == '*' {
			cmd, done, err = r.readMultibulk()
		} else {
			cmd, done, err = r.readInline()
		}
		if err != nil {
			if _, ok := err.(*ProtocolError); ok || err == ErrQueryTooLarge {
				r.err = err
				r.resetState()
			} else if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return Command{}, err
		}
		if done {
			return cmd, nil
		}
	}
}

// line finds the CRLF ending the header line that starts at offset from
// (relative to b.r), reading more as needed, and returns the CR's offset. A
// line longer than MaxInlineLen is tooBig. (redis-server says so when it has
// buffered more than that without a CR, so whether it does for a longer line
// with a CR depends on how the bytes arrived; the Reader always does.) The
// LF is checked by the caller, after the line's content, as redis-server
// would have reported the content first.
func (r *Reader) line(from int, tooBig error) (int, error) {
	for {
		data := r.b.unread()
		start := max(from, r.seen)
		if i := bytes.IndexByte(data[start:], '\r'); i >= 0 {
			cr := start + i
			if cr-from > r.lim.MaxInlineLen {
				return 0, tooBig
			}
			if cr+1 < len(data) {
				r.seen = 0
				return cr, nil
			}
			r.seen = cr // wait for the byte after the CR
		} else {
			if len(data)-from > r.lim.MaxInlineLen {
				return 0, tooBig
			}
			r.seen = len(data)
		}
		if err := r.more(len(data) + 1); err != nil {
			return 0, err
		}
	}
}

// more reads until want bytes of the current command are buffered.
func (r *Reader) more(want int) error {
	if want > r.lim.MaxQueryLen {
		return ErrQueryTooLarge
	}
	return r.b.fill(want, r.lim.MaxQueryLen)
}

// readMultibulk parses, or continues parsing, a "*<count>" command. done is
// false for a command with a count of zero or less, which is skipped.
func (r *Reader) readMultibulk() (cmd Command, done bool, err error) {
	if !r.inMulti {
		cr, err := r.line(0, ErrTooBigMultibulkCount)
		if err != nil {
			return Command{}, false, err
		}
		data := r.b.unread()
		n, ok := parseInt(data[1:cr])
		switch {
		case !ok || n > r.lim.MaxMultibulkLen || n > maxInt32:
			return Command{}, false, ErrInvalidMultibulkLength
		case r.lim.UnauthMultibulkLen > 0 && n > r.lim.UnauthMultibulkLen:
			return Command{}, false, ErrUnauthenticatedMultibulkLength
		case data[cr+1] != '\n':
			return Command{}, false, ErrLineEnding
		}
		if n <= 0 {
			r.b.r += cr + 2
			return Command{}, false, nil
		}
		r.inMulti, r.left, r.bulk, r.pos = true, n, -1, cr+2
		r.spans = r.spans[:0]
	}
	for r.left > 0 {
		if r.bulk < 0 {
			cr, err := r.line(r.pos, ErrTooBigBulkCount)
			if err != nil {
				return Command{}, false, err
			}
			data := r.b.unread()
			if data[r.pos] != '$' {
				return Command{}, false, expectedDollar(data[r.pos])
			}
			n, ok := parseInt(data[r.pos+1 : cr])
			switch {
			case !ok || n < 0 || n > r.lim.MaxBulkLen:
				return Command{}, false, ErrInvalidBulkLength
			case r.lim.UnauthBulkLen > 0 && n > r.lim.UnauthBulkLen:
				return Command{}, false, ErrUnauthenticatedBulkLength
			case data[cr+1] != '\n':
				return Command{}, false, ErrLineEnding
			}
			r.bulk, r.pos = n, cr+2
		}
		if r.bulk > int64(r.lim.MaxQueryLen-r.pos-2) { // not pos+bulk+2: bulk may be near MaxInt64
			return Command{}, false, ErrQueryTooLarge
		}
		end := r.pos + int(r.bulk)
		if r.b.w-r.b.r < end+2 {
			if err := r.more(end + 2); err != nil {
				return Command{}, false, err
			}
		}
		data := r.b.unread()
		if data[end] != '\r' || data[end+1] != '\n' {
			return Command{}, false, ErrBulkEnding
		}
		r.spans = append(r.spans, r.pos, end)
		r.pos, r.bulk = end+2, -1
		r.left--
	}
	data := r.b.unread()
	args := r.args[:0]
	for i := 0; i < len(r.spans); i += 2 {
		s, e := r.spans[i], r.spans[i+1]
		args = append(args, data[s:e:e])
	}
	r.args = args
	r.b.r += r.pos
	r.resetState()
	return Command{Args: args}, true, nil
}

const maxInt32 = 1<<31 - 1
