package resp

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

// multibulkErrorCases are inputs redis-server rejects with a protocol error;
// TestProtocolErrorsMatchRedis checks each message against a live server.
var multibulkErrorCases = []struct {
	name string
	in   string
	err  string
}{
	{"count not a number", "*x\r\n", "ERR Protocol error: invalid multibulk length"},
	{"count -0", "*-0\r\n", "ERR Protocol error: invalid multibulk length"},
	{"count with leading zero", "*01\r\n", "ERR Protocol error: invalid multibulk length"},
	{"count with plus", "*+1\r\n", "ERR Protocol error: invalid multibulk length"},
	{"count with space", "* 1\r\n", "ERR Protocol error: invalid multibulk length"},
	{"count with trailing space", "*1 \r\n", "ERR Protocol error: invalid multibulk length"},
	{"empty count", "*\r\n", "ERR Protocol error: invalid multibulk length"},
	{"count over INT_MAX", "*2147483648\r\n", "ERR Protocol error: invalid multibulk length"},
	{"count overflows int64", "*99999999999999999999\r\n", "ERR Protocol error: invalid multibulk length"},
	{"LF inside count", "*1\n\r\n", "ERR Protocol error: invalid multibulk length"},
	{"not a bulk", "*1\r\nx\r\n", "ERR Protocol error: expected '$', got 'x'"},
	{"empty bulk header", "*1\r\n\r\n", "ERR Protocol error: expected '$', got ' '"},
	{"integer instead of bulk", "*1\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"},
	{"second argument not bulk", "*2\r\n$4\r\nECHO\r\n+hi\r\n", "ERR Protocol error: expected '$', got '+'"},
	{"negative bulk length", "*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"},
	{"empty bulk length", "*1\r\n$\r\n", "ERR Protocol error: invalid bulk length"},
	{"bulk length with leading zero", "*1\r\n$01\r\n", "ERR Protocol error: invalid bulk length"},
	{"bulk length with junk", "*1\r\n$1x\r\n", "ERR Protocol error: invalid bulk length"},
	{"bulk over proto-max-bulk-len", "*1\r\n$536870913\r\n", "ERR Protocol error: invalid bulk length"},
	{"bulk length overflows int64", "*1\r\n$9223372036854775808\r\n", "ERR Protocol error: invalid bulk length"},
	{"too big count line", "*" + strings.Repeat("1", 70000), "ERR Protocol error: too big mbulk count string"},
	{"too big bulk line", "*1\r\n$" + strings.Repeat("1", 70000), "ERR Protocol error: too big bulk count string"},
	{"unbalanced inline quotes", "SET k \"v\r\n", "ERR Protocol error: unbalanced quotes in request"},
	{"too big inline", "SET k " + strings.Repeat("v", 70000), "ERR Protocol error: too big inline request"},
}

// preAuthErrorCases are rejected by a redis-server with requirepass before
// AUTH, and by a Reader with PreAuthLimits.
var preAuthErrorCases = []struct {
	name string
	in   string
	err  string
}{
	{"11 arguments", "*11\r\n", "ERR Protocol error: unauthenticated multibulk length"},
	{"bulk over 16384", "*1\r\n$16385\r\n", "ERR Protocol error: unauthenticated bulk length"},
	{"bulk over proto-max-bulk-len", "*1\r\n$536870913\r\n", "ERR Protocol error: invalid bulk length"},
	{"count over INT_MAX", "*2147483648\r\n", "ERR Protocol error: invalid multibulk length"},
}

// stricterCases are inputs redis-server accepts (or stalls on) that the
// Reader refuses; TestStricterThanRedis checks what redis-server 7.0 does.
var stricterCases = []struct {
	name  string
	in    string
	err   error
	redis []string // redis-server's replies (to in + 70000 bytes for NUL)
}{
	{"bulk not followed by CRLF", "*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n", ErrBulkEnding, []string{"+PONG\r\n", "+PONG\r\n"}},
	{"count CR not followed by LF", "*1\rX$4\r\nPING\r\n", ErrLineEnding, []string{"+PONG\r\n"}},
	{"bulk length CR not followed by LF", "*1\r\n$4\rXPING\r\n", ErrLineEnding, []string{"+PONG\r\n"}},
	{"NUL in inline line", "ECHO a\x00b\r\nPING\r\n", ErrInlineNUL, []string{"-ERR Protocol error: too big inline request\r\n"}},
}

func TestMultibulkErrors(t *testing.T) {
	for _, tc := range multibulkErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, rd := range readers(tc.in) {
				r := NewReader(rd, 64)
				_, err := r.ReadCommand()
				var pe *ProtocolError
				if !errors.As(err, &pe) || pe.Error() != tc.err {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if _, err2 := r.ReadCommand(); err2 != err {
					t.Fatalf("error not sticky: %v", err2)
				}
				if got := string(pe.AppendReply(nil)); got != "-"+tc.err+"\r\n" {
					t.Fatalf("AppendReply = %q", got)
				}
			}
		})
	}
	for _, tc := range preAuthErrorCases {
		t.Run("preauth "+tc.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tc.in), 0)
			r.SetLimits(PreAuthLimits())
			if _, err := r.ReadCommand(); err == nil || err.Error() != tc.err {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
	for _, tc := range stricterCases {
		t.Run("stricter "+tc.name, func(t *testing.T) {
			for _, rd := range readers(tc.in) {
				if _, err := NewReader(rd, 0).ReadCommand(); err != tc.err {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
			}
		})
	}
}

func TestReadCommand(t *testing.T) {
	big := strings.Repeat("v", 100000)
	in := "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n" +
		"*0\r\n*-1\r\n*-5\r\n\r\n" + // skipped
		"GET key\r\n" +
		"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n" +
		"*2\r\n$4\r\nECHO\r\n$100000\r\n" + big + "\r\n" +
		"*1\r\n$8\r\n\x00\r\n\xff*\r\n$\r\n" + // binary-safe
		" *1\r\n" // inline: a space first
	want := [][]string{
		{"SET", "key", "value"},
		{"GET", "key"},
		{"ECHO", ""},
		{"ECHO", big},
		{"\x00\r\n\xff*\r\n$"},
		{"*1"},
	}
	for i, rd := range readers(in) {
		r := NewReader(rd, 16)
		got, err := readAll(r)
		if err != io.EOF || !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("reader %d: got %.80q, %v", i, got, err)
		}
	}
}

func TestCommandFlags(t *testing.T) {
	r := NewReader(strings.NewReader("*1\r\n$4\r\nPING\r\nPING\r\n"), 0)
	c1, _ := r.ReadCommand()
	if c1.Inline {
		t.Fatal("multibulk reported inline")
	}
	if r.Buffered() != 6 {
		t.Fatalf("Buffered = %d after first command, want 6", r.Buffered())
	}
	c2, _ := r.ReadCommand()
	if !c2.Inline {
		t.Fatal("inline not reported")
	}
}

func TestArgsCapacityCapped(t *testing.T) {
	r := NewReader(strings.NewReader("*2\r\n$1\r\na\r\n$1\r\nb\r\n"), 0)
	cmd, err := r.ReadCommand()
	if err != nil {
		t.Fatal(err)
	}
	_ = append(cmd.Args[0], "XXXXXXXX"...)
	if string(cmd.Args[1]) != "b" {
		t.Fatalf("appending to one argument overwrote the next: %q", cmd.Args[1])
	}
}

func TestReadCommandEOF(t *testing.T) {
	for _, tc := range []struct {
		in  string
		err error
	}{
		{"", io.EOF},
		{"*1\r\n$4\r\nPING\r\n", io.EOF},
		{"*1\r\n$4\r\nPI", io.ErrUnexpectedEOF},
		{"*1\r\n$4", io.ErrUnexpectedEOF},
		{"*1\r", io.ErrUnexpectedEOF},
		{"*", io.ErrUnexpectedEOF},
		{"PING", io.ErrUnexpectedEOF},
		{"   ", io.ErrUnexpectedEOF},
	} {
		for _, rd := range readers(tc.in) {
			if _, err := readAll(NewReader(rd, 0)); err != tc.err {
				t.Errorf("%q: err = %v, want %v", tc.in, err, tc.err)
			}
		}
	}
}

// timeoutReader fails with os.ErrDeadlineExceeded before every other read.
type timeoutReader struct {
	rd   io.Reader
	fail bool
}

func (t *timeoutReader) Read(p []byte) (int, error) {
	if t.fail = !t.fail; t.fail {
		return 0, os.ErrDeadlineExceeded
	}
	return t.rd.Read(p)
}

func TestReadCommandResumesAfterTimeout(t *testing.T) {
	in := "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nGET \"key\"\r\n"
	r := NewReader(&timeoutReader{rd: &chunkReader{data: []byte(in), sizes: []int{1, 2}}}, 16)
	var got [][]string
	for timeouts := 0; ; {
		cmd, err := r.ReadCommand()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			timeouts++
			continue
		}
		if err == io.EOF {
			if timeouts < 10 {
				t.Fatalf("only %d timeouts", timeouts)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		args := []string{}
		for _, a := range cmd.Args {
			args = append(args, string(a))
		}
		got = append(got, args)
	}
	want := [][]string{{"SET", "key", "value"}, {"GET", "key"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("got %q", got)
	}
}

func TestLimits(t *testing.T) {
	lim := Limits{MaxMultibulkLen: 2, MaxBulkLen: 5, MaxInlineLen: 10, MaxQueryLen: 40}
	for _, tc := range []struct {
		in  string
		err error
	}{
		{"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n", io.EOF},
		{"*3\r\n", ErrInvalidMultibulkLength},
		{"*1\r\n$6\r\n", ErrInvalidBulkLength},
		{"012345678\r\n", io.EOF}, // MaxInlineLen counts the CR
		{"0123456789\n", io.EOF},
		{"0123456789\r\n", ErrTooBigInlineRequest},
		{"*" + strings.Repeat("1", 11), ErrTooBigMultibulkCount},
		{"*2\r\n$5\r\nhello\r\n$" + strings.Repeat("1", 11), ErrTooBigBulkCount},
		{"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n", io.EOF},
	} {
		for _, rd := range readers(tc.in) {
			r := NewReader(rd, 16)
			r.SetLimits(lim)
			if _, err := readAll(r); err != tc.err {
				t.Errorf("%q: err = %v, want %v", tc.in, err, tc.err)
			}
		}
	}
	lim.MaxQueryLen = 25 // the two-argument command is 26 bytes
	r := NewReader(strings.NewReader("*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n"), 16)
	r.SetLimits(lim)
	if _, err := r.ReadCommand(); err != ErrQueryTooLarge {
		t.Fatalf("err = %v, want ErrQueryTooLarge", err)
	}
	if _, err := r.ReadCommand(); err != ErrQueryTooLarge {
		t.Fatalf("ErrQueryTooLarge not sticky: %v", err)
	}
	r.Reset(strings.NewReader("PING\r\n"))
	if cmd, err := r.ReadCommand(); err != nil || string(cmd.Args[0]) != "PING" {
		t.Fatalf("after Reset: %q, %v", cmd.Args, err)
	}
	if got := NewReader(nil, 0).Limits(); got != DefaultLimits() {
		t.Fatalf("default limits %+v", got)
	}
	r.SetLimits(Limits{})
	if r.Limits() != DefaultLimits() {
		t.Fatalf("zero Limits did not mean defaults: %+v", r.Limits())
	}
}

func TestShrink(t *testing.T) {
	var in []byte
	in = AppendCommand(in, [][]byte{[]byte("SET"), []byte("k"), bytes.Repeat([]byte("v"), 1<<20)})
	in = append(in, "PING\r\n"...)
	r := NewReader(bytes.NewReader(in), 1024)
	if _, err := r.ReadCommand(); err != nil {
		t.Fatal(err)
	}
	if len(r.b.buf) < 1<<20 {
		t.Fatalf("buffer did not grow: %d", len(r.b.buf))
	}
	r.Shrink()
	if len(r.b.buf) != 1024 {
		t.Fatalf("buffer after Shrink: %d", len(r.b.buf))
	}
	if cmd, err := r.ReadCommand(); err != nil || string(cmd.Args[0]) != "PING" {
		t.Fatalf("after Shrink: %q, %v", cmd.Args, err)
	}
}

func TestParseInt(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1": 1, "-1": -1, "9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63,
	} {
		if got, ok := parseInt([]byte(in)); !ok || got != want {
			t.Errorf("%q: %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "-", "-0", "00", "01", "+1", " 1", "1 ", "9223372036854775808",
		"-9223372036854775809", "18446744073709551616", "99999999999999999999", "1a", "0x1"} {
		if got, ok := parseInt([]byte(in)); ok {
			t.Errorf("%q parsed as %d", in, got)
		}
	}
}

func TestHugeBulkLimitDoesNotOverflow(t *testing.T) {
	r := NewReader(strings.NewReader("*1\r\n$9223372036854775800\r\nx"), 0)
	r.SetLimits(Limits{MaxBulkLen: 1<<63 - 1})
	if _, err := r.ReadCommand(); err != ErrQueryTooLarge {
		t.Fatalf("err = %v", err)
	}
}

func TestShrinkMidCommand(t *testing.T) {
	in := AppendCommand(nil, [][]byte{[]byte("SET"), []byte("k"), bytes.Repeat([]byte("v"), 100000)})
	tr := &timeoutReader{rd: &chunkReader{data: in, sizes: []int{5000}}}
	r := NewReader(tr, 64)
	r.spans = make([]int, 0, 4096) // as after a command with many arguments
	for {
		cmd, err := r.ReadCommand()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			r.Shrink() // between attempts, with a command half read
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(cmd.Args) != 3 || len(cmd.Args[2]) != 100000 || string(cmd.Args[1]) != "k" {
			t.Fatalf("got %d args", len(cmd.Args))
		}
		return
	}
}
