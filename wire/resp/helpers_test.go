package resp

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// readAll reads commands until an error, copying their arguments.
func readAll(r *Reader) ([][]string, error) {
	var out [][]string
	for {
		cmd, err := r.ReadCommand()
		if err == errStall {
			continue // as a proxy's event loop does when the socket is drained
		}
		if err != nil {
			return out, err
		}
		args := make([]string, len(cmd.Args))
		for i, a := range cmd.Args {
			args[i] = string(a)
		}
		out = append(out, args)
	}
}

// quoteInline encodes args as one inline line that sdssplitargs splits
// back into args: every argument double-quoted, with escapes for the bytes
// that need them (as sdscatrepr does).
func quoteInline(dst []byte, args []string) []byte {
	for i, a := range args {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, '"')
		for j := 0; j < len(a); j++ {
			switch c := a[j]; c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, `\n`...)
			case '\r':
				dst = append(dst, `\r`...)
			case '\t':
				dst = append(dst, `\t`...)
			case '\a':
				dst = append(dst, `\a`...)
			case '\b':
				dst = append(dst, `\b`...)
			default:
				if c < 0x20 || c >= 0x7f {
					dst = fmt.Appendf(dst, `\x%02x`, c)
				} else {
					dst = append(dst, c)
				}
			}
		}
		dst = append(dst, '"')
	}
	return append(dst, '\r', '\n')
}

// encodeValue re-encodes v (and its attribute) with the Append functions.
func encodeValue(dst []byte, v Value) []byte {
	if a, ok := v.Attribute(); ok {
		dst = encodeValue(dst, a)
	}
	b := v.Bytes()
	switch t := v.Type(); t {
	case TypeSimpleString:
		return AppendSimple(dst, string(b))
	case TypeSimpleError:
		return AppendError(dst, string(b))
	case TypeInteger:
		n, ok := v.Int()
		if !ok {
			panic("integer did not parse")
		}
		return AppendInt(dst, n)
	case TypeBulkString:
		if v.IsNull() {
			return AppendNull(dst, false)
		}
		return AppendBulk(dst, b)
	case TypeNull:
		return AppendNull(dst, true)
	case TypeDouble:
		dst = append(append(dst, ','), b...)
		return append(dst, '\r', '\n')
	case TypeBoolean:
		return AppendBool(dst, b[0] == 't')
	case TypeBlobError:
		return AppendBlobError(dst, b)
	case TypeVerbatim:
		return AppendVerbatim(dst, string(b[:3]), b[4:])
	case TypeBigNumber:
		return AppendBigNumber(dst, string(b))
	case TypeArray:
		if v.IsNull() {
			return AppendNullArray(dst, false)
		}
		dst = AppendArrayHeader(dst, v.Len())
	case TypeMap:
		dst = AppendMapHeader(dst, v.Len()/2)
	case TypeSet:
		dst = AppendSetHeader(dst, v.Len())
	case TypePush:
		dst = AppendPushHeader(dst, v.Len())
	case TypeAttribute:
		dst = AppendAttributeHeader(dst, v.Len()/2)
	default:
		panic("unknown type " + t.String())
	}
	for it := v.Iter(); it.Next(); {
		dst = encodeValue(dst, it.Value())
	}
	return dst
}

// dump renders v as a compact string for test expectations:
// "[a b]" arrays, "{k:v}" maps, "~[..]" sets, ">[..]" pushes, "nil",
// "|{..}" prefix for attributes, and scalars as type byte + payload.
func dump(v Value) string {
	var sb strings.Builder
	dumpTo(&sb, v)
	return sb.String()
}

func dumpTo(sb *strings.Builder, v Value) {
	if a, ok := v.Attribute(); ok {
		sb.WriteString("|")
		dumpTo(sb, a)
	}
	if v.IsNull() {
		sb.WriteString("nil")
		return
	}
	switch t := v.Type(); t {
	case TypeArray, TypeSet, TypePush:
		if t != TypeArray {
			sb.WriteByte(byte(t))
		}
		sb.WriteByte('[')
		for it, i := v.Iter(), 0; it.Next(); i++ {
			if i > 0 {
				sb.WriteByte(' ')
			}
			dumpTo(sb, it.Value())
		}
		sb.WriteByte(']')
	case TypeMap, TypeAttribute:
		sb.WriteByte('{')
		for it, i := v.Iter(), 0; it.Next(); i++ {
			if i%2 == 1 {
				sb.WriteByte(':')
			} else if i > 0 {
				sb.WriteByte(' ')
			}
			dumpTo(sb, it.Value())
		}
		sb.WriteByte('}')
	case TypeBulkString:
		sb.Write(v.Bytes())
	default:
		sb.WriteByte(byte(t))
		sb.Write(v.Bytes())
	}
}

// readReplies reads replies until an error, returning their raw bytes.
func readReplies(r *ReplyReader) ([]string, error) {
	var out []string
	for {
		rep, err := r.ReadReply()
		if err == errStall {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(rep.Raw()))
	}
}

// sameErr reports whether two errors from different readers are the same
// outcome.
func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	var pa, pb *ProtocolError
	if errors.As(a, &pa) && errors.As(b, &pb) {
		return pa.Error() == pb.Error()
	}
	return a == b
}

// chunkReader returns its data in reads of the given sizes, cycling, then
// io.EOF.
type chunkReader struct {
	data  []byte
	sizes []int
	n     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := min(c.sizes[c.n%len(c.sizes)], len(p), len(c.data))
	c.n++
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

// errStall is stallReader's read error: nothing to read yet.
var errStall = errors.New("stall")

// stallReader is a chunkReader that fails with errStall before every
// chunk, as a non-blocking socket does when it is drained: the Reader
// must resume the command or reply in progress on the next call.
type stallReader struct {
	chunkReader
	stalled bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	if !s.stalled && len(s.data) > 0 {
		s.stalled = true
		return 0, errStall
	}
	s.stalled = false
	return s.chunkReader.Read(p)
}
