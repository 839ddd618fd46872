package resp

import (
	"bytes"
	"io"
)

// Type is a RESP type, named by its first byte on the wire.
type Type byte

// The RESP2 and RESP3 types.
const (
	TypeSimpleString Type = '+'
	TypeSimpleError  Type = '-'
	TypeInteger      Type = ':'
	TypeBulkString   Type = '$' // "$-1" is RESP2's null bulk string
	TypeArray        Type = '*' // "*-1" is RESP2's null array
	TypeNull         Type = '_'
	TypeDouble       Type = ','
	TypeBoolean      Type = '#'
	TypeBlobError    Type = '!'
	TypeVerbatim     Type = '='
	TypeBigNumber    Type = '('
	TypeMap          Type = '%'
	TypeSet          Type = '~'
	TypeAttribute    Type = '|'
	TypePush         Type = '>'
)

// IsAggregate reports whether t is a type with child elements.
func (t Type) IsAggregate() bool {
	switch t {
	case TypeArray, TypeMap, TypeSet, TypeAttribute, TypePush:
		return true
	}
	return false
}

// String returns the type's name as in the RESP3 specification.
func (t Type) String() string {
	switch t {
	case TypeSimpleString:
		return "simple string"
	case TypeSimpleError:
		return "simple error"
	case TypeInteger:
		return "integer"
	case TypeBulkString:
		return "bulk string"
	case TypeArray:
		return "array"
	case TypeNull:
		return "null"
	case TypeDouble:
		return "double"
	case TypeBoolean:
		return "boolean"
	case TypeBlobError:
		return "blob error"
	case TypeVerbatim:
		return "verbatim string"
	case TypeBigNumber:
		return "big number"
	case TypeMap:
		return "map"
	case TypeSet:
		return "set"
	case TypeAttribute:
		return "attribute"
	case TypePush:
		return "push"
	}
	return "type " + string([]byte{byte(t)})
}

// node is one element of a Reply, in pre-order. Offsets are from the start
// of the reply.
type node struct {
	typ   Type
	start int32 // the type byte
	data  int32 // the payload of a string or line type
	size  int32 // payload length, or child count of an aggregate (two per map pair); -1 for null
	end   int32 // just past the element and its children
	next  int32 // index of the node after this element's subtree
	attr  int32 // index of the attribute node annotating this element, or -1
}

type frame struct {
	node int32
	left int32 // children still to parse
}

// maxHeaderLine bounds the line of a length, integer, boolean or null.
const maxHeaderLine = 32

// Reply is one complete server reply: its raw bytes, to forward unchanged,
// and a flat tree of its elements, to walk from Root and rewrite with
// AppendEdited. A Reply returned by ReplyReader is valid until the next
// ReadReply; a zero Reply is ready for Parse with DefaultReplyLimits.
type Reply struct {
	raw   []byte
	nodes []node
	root  int32
	lim   ReplyLimits

	// Parser state, kept across reads of a reply split over several.
	stack []frame
	pos   int   // next unparsed byte
	seen  int   // bytes already searched for the end of the line at pos
	attr  int32 // a complete attribute waiting for the value it annotates, or -1
}

// SetLimits sets the limits Parse applies.
func (rep *Reply) SetLimits(l ReplyLimits) { rep.lim = l.withDefaults() }

// Raw returns the reply's bytes, attributes included.
func (rep *Reply) Raw() []byte { return rep.raw }

// Root returns the reply's top-level value (after any attribute).
func (rep *Reply) Root() Value { return Value{rep: rep, i: rep.root} }

// Parse parses the reply at the start of b and returns its length. If b ends
// before the reply does it returns ErrIncomplete. The Reply then refers to b.
func (rep *Reply) Parse(b []byte) (int, error) {
	rep.reset()
	done, _, err := rep.advance(b)
	if err != nil || !done {
		rep.reset()
		if err == nil {
			err = ErrIncomplete
		}
		return 0, err
	}
	rep.raw = b[:rep.pos:rep.pos]
	return rep.pos, nil
}

func (rep *Reply) reset() {
	if rep.lim.MaxDepth == 0 {
		rep.lim = DefaultReplyLimits().withDefaults()
	}
	rep.raw = nil
	rep.nodes = rep.nodes[:0]
	rep.stack = rep.stack[:0]
	rep.root, rep.attr = -1, -1
	rep.pos, rep.seen = 0, 0
}

// advance parses elements from rep.pos in data, which holds the reply from
// its first byte. It returns done once the reply is complete; otherwise need
// is how many bytes data must hold for parsing to progress.
func (rep *Reply) advance(data []byte) (done bool, need int, err error) {
	lim := &rep.lim
	for {
		pos := rep.pos
		if pos >= len(data) {
			if pos >= lim.MaxReplyLen {
				return false, 0, ErrReplyTooLarge
			}
			return false, pos + 1, nil
		}
		t := Type(data[pos])
		maxLine := maxHeaderLine
		switch t {
		case TypeSimpleString, TypeSimpleError, TypeBigNumber, TypeDouble:
			maxLine = int(lim.MaxBulkLen)
		case TypeInteger, TypeBulkString, TypeArray, TypeNull, TypeBoolean,
			TypeBlobError, TypeVerbatim, TypeMap, TypeSet, TypeAttribute, TypePush:
		default:
			return false, 0, ErrReplyType
		}
		from := max(pos+1, rep.seen)
		i := bytes.IndexByte(data[from:], '\n')
		if i < 0 {
			if len(data)-pos-2 > maxLine {
				return false, 0, ErrReplyLine
			}
			rep.seen = len(data)
			if len(data) >= lim.MaxReplyLen {
				return false, 0, ErrReplyTooLarge
			}
			return false, len(data) + 1, nil
		}
		nl := from + i
		rep.seen = 0
		if nl-pos-2 > maxLine || data[nl-1] != '\r' {
			return false, 0, ErrReplyLine
		}
		line := data[pos+1 : nl-1]
		next := nl + 1
		n := node{typ: t, start: int32(pos), data: int32(pos + 1), size: int32(len(line)), attr: -1}
		switch t {
		case TypeSimpleString, TypeSimpleError, TypeBigNumber, TypeDouble:
			if len(line) == 0 && (t == TypeBigNumber || t == TypeDouble) || bytes.IndexByte(line, '\r') >= 0 {
				return false, 0, ErrReplyLine
			}
		case TypeInteger:
			if _, ok := parseInt(line); !ok {
				return false, 0, ErrReplyLine
			}
		case TypeBoolean:
			if len(line) != 1 || line[0] != 't' && line[0] != 'f' {
				return false, 0, ErrReplyLine
			}
		case TypeNull:
			if len(line) != 0 {
				return false, 0, ErrReplyLine
			}
		case TypeBulkString, TypeBlobError, TypeVerbatim:
			l, ok := parseInt(line)
			if !ok || l < -1 || l == -1 && t != TypeBulkString || l > lim.MaxBulkLen {
				return false, 0, ErrReplyLength
			}
			n.data, n.size = int32(next), int32(l)
			if l >= 0 {
				end := next + int(l) + 2
				if end > lim.MaxReplyLen {
					return false, 0, ErrReplyTooLarge
				}
				if end > len(data) {
					return false, end, nil
				}
				if data[end-2] != '\r' || data[end-1] != '\n' || t == TypeVerbatim && (l < 4 || data[next+3] != ':') {
					return false, 0, ErrReplyLine
				}
				next = end
			}
		default: // aggregates
			l, ok := parseInt(line)
			if !ok || l < -1 || l == -1 && t != TypeArray {
				return false, 0, ErrReplyLength
			}
			if l > int64(lim.MaxElements) {
				return false, 0, ErrReplyTooLarge
			}
			if t == TypeMap || t == TypeAttribute {
				l *= 2
			}
			n.data, n.size = int32(next), int32(l)
		}
		if next > lim.MaxReplyLen {
			return false, 0, ErrReplyTooLarge
		}
		rep.pos = next
		done, err := rep.add(n)
		if err != nil || done {
			return done, 0, err
		}
	}
}

// add appends a parsed element and, if it has no children still to come,
// completes it and any aggregates it completes in turn.
func (rep *Reply) add(n node) (done bool, err error) {
	if len(rep.nodes) >= rep.lim.MaxElements {
		return false, ErrReplyTooLarge
	}
	idx := int32(len(rep.nodes))
	if rep.attr >= 0 {
		if n.typ == TypeAttribute {
			return false, ErrReplyAttributes
		}
		n.attr, rep.attr = rep.attr, -1
	}
	if len(rep.stack) == 0 && n.typ != TypeAttribute {
		rep.root = idx
	}
	rep.nodes = append(rep.nodes, n)
	if n.typ.IsAggregate() && n.size > 0 {
		if len(rep.stack) >= rep.lim.MaxDepth {
			return false, ErrReplyDepth
		}
		rep.stack = append(rep.stack, frame{node: idx, left: n.size})
		return false, nil
	}
	for {
		nd := &rep.nodes[idx]
		nd.end, nd.next = int32(rep.pos), int32(len(rep.nodes))
		if nd.typ == TypeAttribute {
			rep.attr = idx // annotates the next value; not one itself
			return false, nil
		}
		if len(rep.stack) == 0 {
			return true, nil
		}
		top := &rep.stack[len(rep.stack)-1]
		if top.left--; top.left > 0 {
			return false, nil
		}
		idx = top.node
		rep.stack = rep.stack[:len(rep.stack)-1]
	}
}

// ReplyReader reads replies from a server, without allocating once its
// buffer and element table have grown to the largest reply seen. It is not
// safe for concurrent use.
type ReplyReader struct {
	b          buffer
	rep        Reply
	lim        ReplyLimits
	inProgress bool
	err        error
}

// NewReplyReader returns a ReplyReader over rd with a buffer of size bytes
// (16 KiB if size <= 0) and DefaultReplyLimits.
func NewReplyReader(rd io.Reader, size int) *ReplyReader {
	r := &ReplyReader{b: newBuffer(rd, size)}
	r.SetLimits(ReplyLimits{})
	return r
}

// SetLimits changes the limits from the next reply on.
func (r *ReplyReader) SetLimits(l ReplyLimits) { r.lim = l.withDefaults() }

// Buffered returns how many bytes have been read but not yet returned.
func (r *ReplyReader) Buffered() int { return r.b.w - r.b.r }

// Shrink releases a buffer or element table that grew past its initial size
// for a large reply. It invalidates the last Reply.
func (r *ReplyReader) Shrink() {
	r.b.shrink()
	if !r.inProgress {
		if cap(r.rep.nodes) > 4096 {
			r.rep.nodes = nil
		}
		r.rep.raw = nil
	}
}

// Reset makes the ReplyReader read from rd, discarding buffered bytes, state
// and any sticky error.
func (r *ReplyReader) Reset(rd io.Reader) {
	r.b.reset(rd)
	r.inProgress, r.err = false, nil
}

// ReadReply returns the next complete reply. The Reply is reused by the next
// call; its bytes point into the reader's buffer.
//
// It returns io.EOF if the stream ends between replies and
// io.ErrUnexpectedEOF if it ends inside one. Other read errors are returned
// as they are, and the next call resumes the reply in progress. A
// *ProtocolError or ErrReplyTooLarge is sticky: the stream is out of sync.
func (r *ReplyReader) ReadReply() (*Reply, error) {
	if r.err != nil {
		return nil, r.err
	}
	if !r.inProgress {
		r.rep.lim = r.lim
		r.rep.reset()
		r.inProgress = true
	}
	for {
		data := r.b.unread()
		done, need, err := r.rep.advance(data)
		if err != nil {
			r.err, r.inProgress = err, false
			return nil, err
		}
		if done {
			r.rep.raw = data[:r.rep.pos:r.rep.pos]
			r.b.r += r.rep.pos
			r.inProgress = false
			return &r.rep, nil
		}
		if err := r.b.fill(need, r.lim.MaxReplyLen); err != nil {
			return nil, err
		}
	}
}
