package resp

import (
	"math"
	"strconv"
)

// The Append functions encode one RESP value, or an aggregate's header, at
// the end of dst and return the extended slice. They allocate only when dst
// lacks capacity.

// AppendArrayHeader appends "*<n>\r\n"; n elements must follow.
func AppendArrayHeader(dst []byte, n int) []byte { return appendHeader(dst, '*', int64(n)) }

// AppendMapHeader appends the RESP3 map header "%<pairs>\r\n"; 2*pairs
// elements (key, value, key, value, …) must follow.
func AppendMapHeader(dst []byte, pairs int) []byte { return appendHeader(dst, '%', int64(pairs)) }

// AppendSetHeader appends the RESP3 set header "~<n>\r\n".
func AppendSetHeader(dst []byte, n int) []byte { return appendHeader(dst, '~', int64(n)) }

// AppendPushHeader appends the RESP3 push header "><n>\r\n".
func AppendPushHeader(dst []byte, n int) []byte { return appendHeader(dst, '>', int64(n)) }

// AppendAttributeHeader appends the RESP3 attribute header "|<pairs>\r\n";
// 2*pairs elements and then the value they annotate must follow.
func AppendAttributeHeader(dst []byte, pairs int) []byte {
	return appendHeader(dst, '|', int64(pairs))
}

// AppendBulk appends the bulk string "$<len>\r\n<b>\r\n". A nil b is an
// empty string, not a null: see AppendNull.
func AppendBulk(dst, b []byte) []byte {
	dst = appendHeader(dst, '$', int64(len(b)))
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}

// AppendBulkString is AppendBulk for a string.
func AppendBulkString(dst []byte, s string) []byte {
	dst = appendHeader(dst, '$', int64(len(s)))
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// AppendSimple appends the simple string "+<s>\r\n". CR and LF, which a
// simple string cannot hold, become spaces as in redis-server.
func AppendSimple(dst []byte, s string) []byte { return appendLine(dst, '+', s) }

// AppendError appends the simple error "-<msg>\r\n". msg should start with
// an error code such as "ERR " or "WRONGTYPE "; CR and LF become spaces.
func AppendError(dst []byte, msg string) []byte { return appendLine(dst, '-', msg) }

// AppendBlobError appends the RESP3 blob error "!<len>\r\n<b>\r\n".
func AppendBlobError(dst, b []byte) []byte {
	dst = appendHeader(dst, '!', int64(len(b)))
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}

// AppendVerbatim appends the RESP3 verbatim string "=<len>\r\n<format>:<text>\r\n".
// format must be exactly three bytes, such as "txt" or "mkd"; it panics otherwise.
func AppendVerbatim(dst []byte, format string, text []byte) []byte {
	if len(format) != 3 {
		panic("resp: verbatim format must be three bytes")
	}
	dst = appendHeader(dst, '=', int64(4+len(text)))
	dst = append(dst, format...)
	dst = append(dst, ':')
	dst = append(dst, text...)
	return append(dst, '\r', '\n')
}

// AppendInt appends the integer ":<n>\r\n".
func AppendInt(dst []byte, n int64) []byte { return appendHeader(dst, ':', n) }

// AppendDouble appends the RESP3 double ",<f>\r\n" in the shortest form that
// reads back as f, with "inf", "-inf" and "nan" as redis-server writes them.
func AppendDouble(dst []byte, f float64) []byte {
	dst = append(dst, ',')
	switch {
	case math.IsInf(f, 1):
		dst = append(dst, "inf"...)
	case math.IsInf(f, -1):
		dst = append(dst, "-inf"...)
	case math.IsNaN(f):
		dst = append(dst, "nan"...)
	default:
		dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	}
	return append(dst, '\r', '\n')
}

// AppendBool appends the RESP3 boolean "#t\r\n" or "#f\r\n".
func AppendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, "#t\r\n"...)
	}
	return append(dst, "#f\r\n"...)
}

// AppendBigNumber appends the RESP3 big number "(<digits>\r\n"; digits is
// an optional '-' followed by decimal digits, written as given.
func AppendBigNumber(dst []byte, digits string) []byte { return appendLine(dst, '(', digits) }

// AppendNull appends a null: RESP3's "_\r\n", or RESP2's null bulk string
// "$-1\r\n" when resp3 is false.
func AppendNull(dst []byte, resp3 bool) []byte {
	if resp3 {
		return append(dst, "_\r\n"...)
	}
	return append(dst, "$-1\r\n"...)
}

// AppendNullArray appends a null array: RESP3's "_\r\n", or RESP2's
// "*-1\r\n" when resp3 is false.
func AppendNullArray(dst []byte, resp3 bool) []byte {
	if resp3 {
		return append(dst, "_\r\n"...)
	}
	return append(dst, "*-1\r\n"...)
}

// AppendCommand appends args as a multibulk command, the form clients send
// and a proxy forwards upstream.
func AppendCommand(dst []byte, args [][]byte) []byte {
	dst = AppendArrayHeader(dst, len(args))
	for _, a := range args {
		dst = AppendBulk(dst, a)
	}
	return dst
}

func appendHeader(dst []byte, t byte, n int64) []byte {
	dst = append(dst, t)
	if 0 <= n && n < 10 {
		dst = append(dst, byte('0'+n))
	} else {
		dst = strconv.AppendInt(dst, n, 10)
	}
	return append(dst, '\r', '\n')
}

func appendLine(dst []byte, t byte, s string) []byte {
	dst = append(dst, t)
	start := len(dst)
	dst = append(dst, s...)
	for i := start; i < len(dst); i++ {
		if dst[i] == '\r' || dst[i] == '\n' {
			dst[i] = ' '
		}
	}
	return append(dst, '\r', '\n')
}
