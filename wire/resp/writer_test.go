package resp

import (
	"math"
	"testing"
)

func TestAppend(t *testing.T) {
	for _, tc := range []struct {
		got  []byte
		want string
	}{
		{AppendArrayHeader(nil, 3), "*3\r\n"},
		{AppendArrayHeader(nil, 12), "*12\r\n"},
		{AppendMapHeader(nil, 2), "%2\r\n"},
		{AppendSetHeader(nil, 0), "~0\r\n"},
		{AppendPushHeader(nil, 3), ">3\r\n"},
		{AppendAttributeHeader(nil, 1), "|1\r\n"},
		{AppendBulk(nil, []byte("hello")), "$5\r\nhello\r\n"},
		{AppendBulk(nil, nil), "$0\r\n\r\n"},
		{AppendBulkString(nil, "a\r\nb"), "$4\r\na\r\nb\r\n"},
		{AppendSimple(nil, "OK"), "+OK\r\n"},
		{AppendSimple(nil, "a\r\nb"), "+a  b\r\n"},
		{AppendError(nil, "ERR bad\nthing"), "-ERR bad thing\r\n"},
		{AppendBlobError(nil, []byte("SYNTAX x")), "!8\r\nSYNTAX x\r\n"},
		{AppendVerbatim(nil, "txt", []byte("Some string")), "=15\r\ntxt:Some string\r\n"},
		{AppendInt(nil, 0), ":0\r\n"},
		{AppendInt(nil, -9223372036854775808), ":-9223372036854775808\r\n"},
		{AppendDouble(nil, 3.14), ",3.14\r\n"},
		{AppendDouble(nil, 1e300), ",1e+300\r\n"},
		{AppendDouble(nil, math.Inf(1)), ",inf\r\n"},
		{AppendDouble(nil, math.Inf(-1)), ",-inf\r\n"},
		{AppendDouble(nil, math.NaN()), ",nan\r\n"},
		{AppendBool(nil, true), "#t\r\n"},
		{AppendBool(nil, false), "#f\r\n"},
		{AppendBigNumber(nil, "-123456789012345678901234567890"), "(-123456789012345678901234567890\r\n"},
		{AppendNull(nil, true), "_\r\n"},
		{AppendNull(nil, false), "$-1\r\n"},
		{AppendNullArray(nil, true), "_\r\n"},
		{AppendNullArray(nil, false), "*-1\r\n"},
		{AppendCommand([]byte("x"), [][]byte{[]byte("GET"), []byte("k")}), "x*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"},
		{ErrInvalidBulkLength.AppendReply(nil), "-ERR Protocol error: invalid bulk length\r\n"},
	} {
		if string(tc.got) != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
		var rep Reply
		if tc.want[0] != 'x' && tc.want[0] != '|' && tc.want[0] != '*' && tc.want[0] != '%' && tc.want[0] != '~' && tc.want[0] != '>' {
			if n, err := rep.Parse(tc.got); err != nil || n != len(tc.got) {
				t.Errorf("%q does not parse as a reply: %v", tc.got, err)
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("AppendVerbatim with a bad format did not panic")
		}
	}()
	AppendVerbatim(nil, "text", nil)
}

func TestAppendDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 1024)
	val := []byte("value")
	args := [][]byte{[]byte("SET"), []byte("key"), val}
	allocs := testing.AllocsPerRun(100, func() {
		b := buf[:0]
		b = AppendArrayHeader(b, 2)
		b = AppendMapHeader(b, 2)
		b = AppendSetHeader(b, 2)
		b = AppendPushHeader(b, 3)
		b = AppendAttributeHeader(b, 1)
		b = AppendBulk(b, val)
		b = AppendBulkString(b, "key")
		b = AppendSimple(b, "OK")
		b = AppendError(b, "ERR x")
		b = AppendBlobError(b, val)
		b = AppendVerbatim(b, "txt", val)
		b = AppendInt(b, 1234567)
		b = AppendDouble(b, 1.5)
		b = AppendBool(b, true)
		b = AppendBigNumber(b, "12345678901234567890")
		b = AppendNull(b, true)
		b = AppendNullArray(b, false)
		b = AppendCommand(b, args)
		_ = b
	})
	if allocs != 0 {
		t.Fatalf("%v allocations", allocs)
	}
}
