package resp

import "errors"

// Value is one element of a Reply. It is valid as long as the Reply is. The
// zero Value is invalid; so is the Root of an empty Reply.
type Value struct {
	rep *Reply
	i   int32
}

func (v Value) n() *node { return &v.rep.nodes[v.i] }

// Valid reports whether v refers to an element.
func (v Value) Valid() bool { return v.rep != nil && v.i >= 0 && int(v.i) < len(v.rep.nodes) }

// Type returns the element's type.
func (v Value) Type() Type { return v.n().typ }

// IsNull reports whether the element is RESP3's null or RESP2's null bulk
// string or null array.
func (v Value) IsNull() bool { n := v.n(); return n.typ == TypeNull || n.size < 0 }

// IsAggregate reports whether the element has child elements' type (array,
// map, set, attribute, push), even if it is empty or null.
func (v Value) IsAggregate() bool { return v.n().typ.IsAggregate() }

// Len returns the number of child elements of an aggregate, two per pair for
// maps and attributes (keys at even indexes, values at odd); 0 otherwise.
func (v Value) Len() int {
	n := v.n()
	if !n.typ.IsAggregate() || n.size < 0 {
		return 0
	}
	return int(n.size)
}

// Bytes returns the payload of a non-aggregate element: a string's bytes, an
// error's message, a number's or boolean's text (a verbatim string keeps its
// "txt:" prefix). It is nil for nulls and aggregates. The slice's capacity
// is capped at its length.
func (v Value) Bytes() []byte {
	n := v.n()
	if n.typ.IsAggregate() || n.size < 0 || n.typ == TypeNull {
		return nil
	}
	e := n.data + n.size
	return v.rep.raw[n.data:e:e]
}

// Int parses the payload of an integer (or of any string) as a decimal
// int64 in redis-server's strict form.
func (v Value) Int() (int64, bool) { return parseInt(v.Bytes()) }

// Raw returns the element's encoding, children included and its attribute
// excluded.
func (v Value) Raw() []byte { n := v.n(); return v.rep.raw[n.start:n.end:n.end] }

// Attribute returns the attribute map annotating the element, if any.
func (v Value) Attribute() (Value, bool) {
	if a := v.n().attr; a >= 0 {
		return Value{rep: v.rep, i: a}, true
	}
	return Value{}, false
}

// Iter returns an iterator over the element's children.
func (v Value) Iter() Iter {
	return Iter{rep: v.rep, next: v.i + 1, left: int32(v.Len())}
}

// Index returns the k-th child, walking k siblings. It panics if k is not in
// [0, Len()). Use Iter to visit every child.
func (v Value) Index(k int) Value {
	if k < 0 || k >= v.Len() {
		panic("resp: Value.Index out of range")
	}
	it := v.Iter()
	for it.Next() && k > 0 {
		k--
	}
	return it.Value()
}

// Iter walks the children of an aggregate Value in order:
//
//	for it := v.Iter(); it.Next(); {
//		e := it.Value()
//	}
type Iter struct {
	rep  *Reply
	next int32
	left int32
	cur  int32
}

// Next advances to the next child and reports whether there was one.
func (it *Iter) Next() bool {
	if it.left <= 0 {
		return false
	}
	i := it.next
	if it.rep.nodes[i].typ == TypeAttribute {
		i = it.rep.nodes[i].next
	}
	it.cur, it.next = i, it.rep.nodes[i].next
	it.left--
	return true
}

// Value returns the child Next moved to.
func (it *Iter) Value() Value { return Value{rep: it.rep, i: it.cur} }

// Edit replaces the payload of one string element of a Reply: a bulk string
// (not a null one), simple string, simple error, blob error or verbatim
// string, whose payload includes its three-byte format and colon.
type Edit struct {
	At   Value
	Data []byte
}

// ErrBadEdit is returned by AppendEdited for edits out of reply order, of an
// element twice or of another reply, of an element of another type, of a
// simple string or error with CR or LF, or of a verbatim string without its
// "xxx:" format prefix.
var ErrBadEdit = errors.New("resp: invalid reply edit")

// AppendEdited appends the reply's raw bytes to dst with the edited elements
// re-encoded around their new payloads. Edits must be in the order of the
// elements in the reply (the order Iter visits them). Aggregate headers stay
// as they are, since no element is added or removed. With no edits it
// appends Raw. On error dst is returned unchanged.
func (rep *Reply) AppendEdited(dst []byte, edits []Edit) ([]byte, error) {
	orig, prev, last := len(dst), int32(0), int32(-1)
	for _, e := range edits {
		if e.At.rep != rep || e.At.i <= last || !e.At.Valid() {
			return dst[:orig], ErrBadEdit
		}
		last = e.At.i
		n := e.At.n()
		switch n.typ {
		case TypeBulkString:
			if n.size < 0 {
				return dst[:orig], ErrBadEdit
			}
		case TypeSimpleString, TypeSimpleError:
			for _, c := range e.Data {
				if c == '\r' || c == '\n' {
					return dst[:orig], ErrBadEdit
				}
			}
		case TypeBlobError:
		case TypeVerbatim:
			if len(e.Data) < 4 || e.Data[3] != ':' {
				return dst[:orig], ErrBadEdit
			}
		default:
			return dst[:orig], ErrBadEdit
		}
		dst = append(dst, rep.raw[prev:n.start]...)
		if n.typ == TypeSimpleString || n.typ == TypeSimpleError {
			dst = append(dst, byte(n.typ))
		} else {
			dst = appendHeader(dst, byte(n.typ), int64(len(e.Data)))
		}
		dst = append(dst, e.Data...)
		dst = append(dst, '\r', '\n')
		prev = n.end
	}
	return append(dst, rep.raw[prev:]...), nil
}
