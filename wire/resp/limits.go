package resp

import "math"

// Limits bounds what a Reader accepts from a client. A zero Max field means
// the DefaultLimits value; a zero Unauth field means no such check.
type Limits struct {
	// MaxMultibulkLen bounds the argument count of "*<count>"; larger counts
	// are ErrInvalidMultibulkLength. redis-server: INT_MAX.
	MaxMultibulkLen int64
	// MaxBulkLen bounds one multibulk argument; larger is
	// ErrInvalidBulkLength. redis-server: proto-max-bulk-len, 512 MiB.
	MaxBulkLen int64
	// MaxInlineLen bounds an inline command line (ErrTooBigInlineRequest)
	// and a "*<count>" or "$<length>" line (ErrTooBigMultibulkCount,
	// ErrTooBigBulkCount). redis-server: PROTO_INLINE_MAX_SIZE, 64 KiB.
	MaxInlineLen int
	// MaxQueryLen bounds the bytes of one command, framing included
	// (ErrQueryTooLarge). redis-server: client-query-buffer-limit, 1 GiB.
	// It is checked whenever the buffer must grow or a bulk length is read,
	// so the buffer never grows past it (a buffer created larger than
	// MaxQueryLen keeps its size, and what fits is not refused); the
	// argument table adds 40 bytes per argument, as redis-server's argv
	// adds its own per-argument overhead.
	MaxQueryLen int
	// UnauthMultibulkLen and UnauthBulkLen are redis-server's tighter
	// bounds for clients that have not authenticated (10 and 16384 when a
	// password is required), reported as ErrUnauthenticatedMultibulkLength
	// and ErrUnauthenticatedBulkLength after the Max checks, as redis does.
	UnauthMultibulkLen int64
	UnauthBulkLen      int64
}

// DefaultLimits returns redis-server's own defaults for an authenticated client.
func DefaultLimits() Limits {
	return Limits{
		MaxMultibulkLen: math.MaxInt32,
		MaxBulkLen:      512 << 20,
		MaxInlineLen:    64 << 10,
		MaxQueryLen:     1 << 30,
	}
}

// PreAuthLimits returns redis-server's bounds for a client that has not yet
// authenticated: at most 10 arguments of at most 16384 bytes. MaxQueryLen is
// 256 KiB, which any command within those bounds (or an inline one) fits.
func PreAuthLimits() Limits {
	l := DefaultLimits()
	l.UnauthMultibulkLen = 10
	l.UnauthBulkLen = 16384
	l.MaxQueryLen = 256 << 10
	return l
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxMultibulkLen <= 0 {
		l.MaxMultibulkLen = d.MaxMultibulkLen
	}
	if l.MaxBulkLen <= 0 {
		l.MaxBulkLen = d.MaxBulkLen
	}
	if l.MaxInlineLen <= 0 {
		l.MaxInlineLen = d.MaxInlineLen
	}
	if l.MaxQueryLen <= 0 {
		l.MaxQueryLen = d.MaxQueryLen
	}
	return l
}

// ReplyLimits bounds what a ReplyReader or Reply.Parse accepts from a
// server. A zero field means the DefaultReplyLimits value.
type ReplyLimits struct {
	// MaxDepth bounds the nesting of aggregates (attributes included).
	MaxDepth int
	// MaxBulkLen bounds a bulk string, blob error or verbatim string, and the
	// line of a simple string, simple error, big number or double.
	MaxBulkLen int64
	// MaxElements bounds the elements of one reply, counting every value at
	// every level, and the declared length of any one aggregate. The element
	// table costs 28 bytes per element.
	MaxElements int
	// MaxReplyLen bounds the bytes of one reply; at most math.MaxInt32.
	MaxReplyLen int
}

// DefaultReplyLimits returns limits generous enough for any reply
// redis-server sends with its default configuration: depth 64, 512 MiB
// strings, 32 Mi elements, 1 GiB per reply.
func DefaultReplyLimits() ReplyLimits {
	return ReplyLimits{MaxDepth: 64, MaxBulkLen: 512 << 20, MaxElements: 32 << 20, MaxReplyLen: 1 << 30}
}

func (l ReplyLimits) withDefaults() ReplyLimits {
	d := DefaultReplyLimits()
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxBulkLen <= 0 {
		l.MaxBulkLen = d.MaxBulkLen
	}
	if l.MaxElements <= 0 {
		l.MaxElements = d.MaxElements
	}
	if l.MaxReplyLen <= 0 {
		l.MaxReplyLen = d.MaxReplyLen
	}
	// Offsets inside a Reply are int32.
	l.MaxReplyLen = min(l.MaxReplyLen, math.MaxInt32-8)
	l.MaxElements = min(l.MaxElements, math.MaxInt32/2)
	l.MaxBulkLen = min(l.MaxBulkLen, int64(l.MaxReplyLen))
	return l
}
