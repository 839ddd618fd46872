package resp

import "errors"

// ProtocolError is a violation of the protocol by the peer. Its message is
// the one redis-server sends before closing the connection, such as
// "ERR Protocol error: invalid bulk length"; a proxy replies with it as a
// simple error (see AppendReply) and closes. After a ProtocolError the stream
// is out of sync: the reader returns the same error until it is Reset.
type ProtocolError struct {
	msg string
}

// Error returns the redis-style message, starting with "ERR Protocol error: ".
func (e *ProtocolError) Error() string { return e.msg }

// AppendReply appends the error as a RESP simple error, "-<message>\r\n".
func (e *ProtocolError) AppendReply(dst []byte) []byte { return AppendError(dst, e.msg) }

func protoErr(msg string) *ProtocolError { return &ProtocolError{msg: "ERR Protocol error: " + msg} }

// Command-side protocol errors with redis-server's exact messages.
var (
	ErrInvalidMultibulkLength         = protoErr("invalid multibulk length")
	ErrInvalidBulkLength              = protoErr("invalid bulk length")
	ErrUnauthenticatedMultibulkLength = protoErr("unauthenticated multibulk length")
	ErrUnauthenticatedBulkLength      = protoErr("unauthenticated bulk length")
	ErrUnbalancedQuotes               = protoErr("unbalanced quotes in request")
	ErrTooBigInlineRequest            = protoErr("too big inline request")
	ErrTooBigMultibulkCount           = protoErr("too big mbulk count string")
	ErrTooBigBulkCount                = protoErr("too big bulk count string")
)

// Command-side protocol errors for input redis-server does not reject but
// would mishandle; the messages are this package's, in redis-server's style.
var (
	// ErrInlineNUL: redis-server looks for an inline command's newline with
	// strchr, so a NUL byte before it hides the newline and the connection
	// stalls until "too big inline request". The Reader refuses at once.
	ErrInlineNUL = protoErr("NUL byte in inline request")
	// ErrLineEnding: redis-server skips whatever byte follows the CR of a
	// "*<count>" or "$<length>" line; the Reader requires it to be LF.
	ErrLineEnding = protoErr("CR not followed by LF")
	// ErrBulkEnding: redis-server skips the two bytes after a bulk argument
	// without looking at them; the Reader requires them to be CRLF.
	ErrBulkEnding = protoErr("bulk argument not followed by CRLF")
)

// expectedDollar returns redis-server's error for a bulk header that does not
// start with '$'. Like addReplyErrorFormat it turns CR and LF into spaces.
func expectedDollar(c byte) *ProtocolError {
	if c == '\r' || c == '\n' {
		c = ' '
	}
	return &ProtocolError{msg: "ERR Protocol error: expected '$', got '" + string(rune(c)&0xff|0) + "'"}
}

// Reply-side protocol errors: the upstream server sent something that is not
// RESP2/RESP3 as redis-server writes it. The connection to it is unusable.
var (
	ErrReplyType       = protoErr("invalid reply type byte")
	ErrReplyLine       = protoErr("invalid reply line")
	ErrReplyLength     = protoErr("invalid reply length")
	ErrReplyDepth      = protoErr("reply nested too deeply")
	ErrReplyAttributes = protoErr("attribute followed by attribute")
)

// ErrQueryTooLarge is returned when one command needs more buffer than
// Limits.MaxQueryLen. redis-server closes such a client (client-query-buffer-
// limit) without a reply; it is not a ProtocolError for that reason.
var ErrQueryTooLarge = errors.New("resp: command exceeds the query buffer limit")

// ErrReplyTooLarge is returned when one reply is longer than
// ReplyLimits.MaxReplyLen or has more elements than ReplyLimits.MaxElements.
var ErrReplyTooLarge = errors.New("resp: reply exceeds the size limit")

// ErrIncomplete is returned by Reply.Parse when the bytes end before the
// reply does.
var ErrIncomplete = errors.New("resp: incomplete reply")
