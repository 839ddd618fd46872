package resp

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
)

// inlineCases are inline argument lists as redis-server's sdssplitargs
// splits them; TestInlineMatchesRedis checks each against a live server.
var inlineCases = []struct {
	name string
	line string
	want []string // nil with bad set: unbalanced quotes
	bad  bool
}{
	{"plain", `a b c`, []string{"a", "b", "c"}, false},
	{"extra spaces", `  a   b  `, []string{"a", "b"}, false},
	{"tab separates", "a\tb", []string{"a", "b"}, false},
	{"CR separates", "a\rb", []string{"a", "b"}, false},
	{"VT and FF do not end an argument", "a\vb c\fd", []string{"a\vb", "c\fd"}, false},
	{"VT and FF are skipped between", "\va \fb\v", []string{"a", "b\v"}, false},
	{"double quotes", `"a b" c`, []string{"a b", "c"}, false},
	{"escapes", `"a\nb\r\tc\bd\ae"`, []string{"a\nb\r\tc\bd\ae"}, false},
	{"hex escapes", `"\x41\x4a\x4A\x00\xff"`, []string{"AJJ\x00\xff"}, false},
	{"bad hex escapes", `"\xzz" "\x4" "\X41" "\x4g"`, []string{"xzz", "x4", "X41", "x4g"}, false},
	{"backslash escapes", `"\\" "\"" "\q" "\'"`, []string{`\`, `"`, "q", "'"}, false},
	{"single quotes", `'a\'b' 'c\"d' 'e\\f' 'g\nh' '\x41'`, []string{"a'b", `c\"d`, `e\\f`, `g\nh`, `\x41`}, false},
	{"empty quotes", `"" ''`, []string{"", ""}, false},
	{"quote mid argument", `foo"bar baz"`, []string{"foobar baz"}, false},
	{"single quote mid argument", `foo'bar'`, []string{"foobar"}, false},
	{"closing quote then VT", "\"a\"\vb", []string{"a", "b"}, false},
	{"closing quote then FF", "\"a\"\fb", []string{"a", "b"}, false},
	{"closing quote then tab", "\"a\"\tb", []string{"a", "b"}, false},
	{"raw CR and tab inside quotes", "\"a\rb\tc\"", []string{"a\rb\tc"}, false},
	{"high bytes", "\xc3\xa9 \xa0x \x85y", []string{"\xc3\xa9", "\xa0x", "\x85y"}, false},
	{"escaped backslash before end", `"a\\"`, []string{`a\`}, false},
	{"unquoted backslash", `a\ b\x41`, []string{`a\`, `b\x41`}, false},
	{"trailing space after quote", `"a"  `, []string{"a"}, false},
	{"unterminated double", `"abc`, nil, true},
	{"unterminated single", `'abc`, nil, true},
	{"text after closing quote", `"abc"def`, nil, true},
	{"quote after closing quote", `"abc"'def'`, nil, true},
	{"text after mid-argument quote", `foo"bar baz"qux`, nil, true},
	{"quote inside quote", `x"y"z`, nil, true},
	{"escaped closing quote", `"a\"`, nil, true},
	{"backslash at end in quotes", `"trailing\`, nil, true},
	{"single quote escaped at end", `'a\\'`, nil, true},
	{"doubled single quote", `'it''s'`, nil, true},
	{"lone double quote", `"`, nil, true},
	{"lone single quote", `'`, nil, true},
	{"opening quote at end", `a"`, nil, true},
	{"escaped quotes unquoted", `\"a\"`, nil, true},
}

func TestSplitInline(t *testing.T) {
	for _, tc := range inlineCases {
		t.Run(tc.name, func(t *testing.T) {
			line := []byte(tc.line)
			args, ok := splitInline(line, nil)
			if ok == tc.bad {
				t.Fatalf("ok = %v, want %v (args %q)", ok, !tc.bad, args)
			}
			if tc.bad {
				return
			}
			got := make([]string, len(args))
			for i, a := range args {
				got[i] = string(a)
				if cap(a) != len(a) {
					t.Errorf("arg %d has spare capacity", i)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReadInline(t *testing.T) {
	for _, tc := range inlineCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, end := range []string{"\r\n", "\n"} {
				in := "RPUSH l " + tc.line + end + "PING" + end
				r := NewReader(strings.NewReader(in), 0)
				cmds, err := readAll(r)
				if tc.bad {
					if err != ErrUnbalancedQuotes || len(cmds) != 0 {
						t.Fatalf("got %q, %v; want ErrUnbalancedQuotes", cmds, err)
					}
					continue
				}
				if err != io.EOF || len(cmds) != 2 {
					t.Fatalf("got %q, %v", cmds, err)
				}
				if !slices.Equal(cmds[0][2:], tc.want) || !slices.Equal(cmds[1], []string{"PING"}) {
					t.Fatalf("got %q, want RPUSH l %q then PING", cmds, tc.want)
				}
			}
		})
	}
}

// skippedLines are inline lines with no arguments, which redis-server skips.
var skippedLines = []string{"\r\n", "\n", "   \r\n", "\t\v\f\r\n", "\r\r\n", " \r \n"}

func TestInlineSkipsEmptyLines(t *testing.T) {
	in := strings.Join(skippedLines, "") + "PING\r\n" + strings.Join(skippedLines, "")
	for _, rd := range readers(in) {
		cmds, err := readAll(NewReader(rd, 16))
		if err != io.EOF || len(cmds) != 1 || cmds[0][0] != "PING" {
			t.Fatalf("got %q, %v", cmds, err)
		}
	}
}

func TestInlineLimits(t *testing.T) {
	max := DefaultLimits().MaxInlineLen
	for _, tc := range []struct {
		name string
		in   string
		err  error
	}{
		{"longest line", "ECHO " + strings.Repeat("x", max-6) + "\r\n", io.EOF},
		{"longest line LF only", "ECHO " + strings.Repeat("x", max-5) + "\n", io.EOF},
		{"one byte too long", "ECHO " + strings.Repeat("x", max-5) + "\r\n", ErrTooBigInlineRequest},
		{"one byte too long LF only", "ECHO " + strings.Repeat("x", max-4) + "\n", ErrTooBigInlineRequest},
		{"no newline", "ECHO " + strings.Repeat("x", max), ErrTooBigInlineRequest},
		{"NUL", "ECHO a\x00b\r\n", ErrInlineNUL},
		{"unterminated", "PING", io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, rd := range readers(tc.in) {
				_, err := readAll(NewReader(rd, 0))
				if err != tc.err {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
			}
		})
	}
}

func TestInlineRoundTrip(t *testing.T) {
	args := []string{"SET", "k e y", "", "\x00\x01\xff", `"'\`, "\r\n\t\a\b\v\f", "é"}
	line := quoteInline(nil, args)
	cmds, err := readAll(NewReader(bytes.NewReader(line), 0))
	if err != io.EOF || len(cmds) != 1 || !slices.Equal(cmds[0], args) {
		t.Fatalf("%s: got %q, %v", line, cmds, err)
	}
}

// readers returns io.Readers that deliver s whole, one byte at a time and
// in uneven chunks.
func readers(s string) []io.Reader {
	return []io.Reader{
		strings.NewReader(s),
		&chunkReader{data: []byte(s), sizes: []int{1}},
		&chunkReader{data: []byte(s), sizes: []int{3, 1, 7, 2, 64}},
	}
}
