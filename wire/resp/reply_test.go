package resp

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
)

var replyCases = []struct {
	name string
	in   string
	dump string
}{
	{"simple string", "+OK\r\n", "+OK"},
	{"empty simple string", "+\r\n", "+"},
	{"simple error", "-ERR unknown command 'x'\r\n", "-ERR unknown command 'x'"},
	{"integer", ":-42\r\n", ":-42"},
	{"bulk", "$5\r\nhello\r\n", "hello"},
	{"empty bulk", "$0\r\n\r\n", ""},
	{"binary bulk", "$4\r\n\r\n\x00\xff\r\n", "\r\n\x00\xff"},
	{"null bulk", "$-1\r\n", "nil"},
	{"null array", "*-1\r\n", "nil"},
	{"null", "_\r\n", "nil"},
	{"empty array", "*0\r\n", "[]"},
	{"array", "*3\r\n$1\r\na\r\n:1\r\n*1\r\n+x\r\n", "[a :1 [+x]]"},
	{"array with nulls", "*3\r\n$-1\r\n*-1\r\n_\r\n", "[nil nil nil]"},
	{"double", ",3.1400000000000001\r\n", ",3.1400000000000001"},
	{"double inf", ",-inf\r\n", ",-inf"},
	{"boolean", "#f\r\n", "#f"},
	{"blob error", "!21\r\nSYNTAX invalid syntax\r\n", "!SYNTAX invalid syntax"},
	{"verbatim", "=15\r\ntxt:Some string\r\n", "=txt:Some string"},
	{"big number", "(-3492890328409238509324850943850943825024385\r\n", "(-3492890328409238509324850943850943825024385"},
	{"map", "%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", "{+first::1 +second::2}"},
	{"empty map", "%0\r\n", "{}"},
	{"set", "~2\r\n+a\r\n+b\r\n", "~[+a +b]"},
	{"push", ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n", ">[message ch hello]"},
	{"attribute (RESP3 spec example)",
		"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
		"|{+key-popularity:{a:,0.1923 b:,0.0012}}[:2039123 :9543892]"},
	{"attribute on an element", "*2\r\n|1\r\n+ttl\r\n:3600\r\n$1\r\na\r\n$1\r\nb\r\n", "[|{+ttl::3600}a b]"},
	{"attribute on the last element", "*2\r\n$1\r\na\r\n|0\r\n*0\r\n", "[a |{}[]]"},
	{"attribute in an attribute", "|1\r\n|1\r\n+k\r\n+v\r\n+a\r\n+b\r\n:1\r\n", "|{|{+k:+v}+a:+b}:1"},
	{"XREAD RESP2", "*1\r\n*2\r\n$6\r\nstream\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
		"[[stream [[1-0 [f v]]]]]"},
	{"nested", "*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n", "[[[[[]]]]]"},
}

func TestParseReply(t *testing.T) {
	for _, tc := range replyCases {
		t.Run(tc.name, func(t *testing.T) {
			var rep Reply
			n, err := rep.Parse([]byte(tc.in + "+next\r\n"))
			if err != nil || n != len(tc.in) {
				t.Fatalf("Parse = %d, %v; want %d", n, err, len(tc.in))
			}
			if string(rep.Raw()) != tc.in {
				t.Fatalf("Raw = %q", rep.Raw())
			}
			if got := dump(rep.Root()); got != tc.dump {
				t.Fatalf("dump = %q, want %q", got, tc.dump)
			}
			if got := string(encodeValue(nil, rep.Root())); got != tc.in {
				t.Fatalf("re-encoded as %q", got)
			}
			if got, err := rep.AppendEdited([]byte("x"), nil); err != nil || string(got) != "x"+tc.in {
				t.Fatalf("AppendEdited(no edits) = %q, %v", got, err)
			}
			for i := range len(tc.in) {
				if n, err := rep.Parse([]byte(tc.in[:i])); err != ErrIncomplete {
					t.Fatalf("prefix %q: %d, %v", tc.in[:i], n, err)
				}
			}
		})
	}
}

func TestReadReplyStreaming(t *testing.T) {
	var all strings.Builder
	var want []string
	for _, tc := range replyCases {
		all.WriteString(tc.in)
		want = append(want, tc.in)
	}
	for i, rd := range readers(all.String()) {
		got, err := readReplies(NewReplyReader(rd, 16))
		if err != io.EOF || !slices.Equal(got, want) {
			t.Fatalf("reader %d: %q, %v", i, got, err)
		}
	}
	for _, in := range []string{"$5\r\nhel", "*2\r\n:1\r\n", "+OK", "|1\r\n+a\r\n+b\r\n"} {
		if _, err := NewReplyReader(strings.NewReader(in), 0).ReadReply(); err != io.ErrUnexpectedEOF {
			t.Errorf("%q: err = %v", in, err)
		}
	}
}

func TestReplyErrors(t *testing.T) {
	deep := strings.Repeat("*1\r\n", 65) + ":1\r\n"
	for _, tc := range []struct {
		in  string
		err error
	}{
		{"x\r\n", ErrReplyType},
		{"\r\n", ErrReplyType},
		{"+OK\n", ErrReplyLine},
		{"+O\rK\r\n", ErrReplyLine},
		{":abc\r\n", ErrReplyLine},
		{":01\r\n", ErrReplyLine},
		{":\r\n", ErrReplyLine},
		{"$-2\r\n", ErrReplyLength},
		{"$?\r\n", ErrReplyLength},
		{"!-1\r\n", ErrReplyLength},
		{"=-1\r\n", ErrReplyLength},
		{"$3\r\nabcd\r\n", ErrReplyLine},
		{"=3\r\ntxt\r\n", ErrReplyLine},
		{"=5\r\ntxt;a\r\n", ErrReplyLine},
		{"#x\r\n", ErrReplyLine},
		{"#\r\n", ErrReplyLine},
		{"_x\r\n", ErrReplyLine},
		{",\r\n", ErrReplyLine},
		{"(\r\n", ErrReplyLine},
		{"%-1\r\n", ErrReplyLength},
		{"~-1\r\n", ErrReplyLength},
		{">-1\r\n", ErrReplyLength},
		{"|-1\r\n", ErrReplyLength},
		{"*-2\r\n", ErrReplyLength},
		{"*1 \r\n", ErrReplyLength},
		{"|1\r\n+a\r\n+b\r\n|0\r\n+c\r\n", ErrReplyAttributes},
		{deep, ErrReplyDepth},
		{":" + strings.Repeat("1", 40), ErrReplyLine},
		{"*99999999999\r\n", ErrReplyTooLarge},
	} {
		for i, rd := range readers(tc.in) {
			r := NewReplyReader(rd, 16)
			if _, err := r.ReadReply(); err != tc.err {
				t.Errorf("%q reader %d: err = %v, want %v", tc.in, i, err, tc.err)
			}
			if _, err := r.ReadReply(); err != tc.err {
				t.Errorf("%q: error not sticky: %v", tc.in, err)
			}
		}
		var rep Reply
		if _, err := rep.Parse([]byte(tc.in)); err != tc.err {
			t.Errorf("%q: Parse err = %v, want %v", tc.in, err, tc.err)
		}
	}
}

func TestReplyLimits(t *testing.T) {
	lim := ReplyLimits{MaxDepth: 2, MaxBulkLen: 5, MaxElements: 4, MaxReplyLen: 30}
	for _, tc := range []struct {
		in  string
		err error
	}{
		{"*1\r\n*1\r\n:1\r\n", nil},
		{"*1\r\n*1\r\n*0\r\n", nil}, // an empty aggregate opens no level
		{"*1\r\n*1\r\n*1\r\n:1\r\n", ErrReplyDepth},
		{"|1\r\n*1\r\n*1\r\n:1\r\n+b\r\n+c\r\n", ErrReplyDepth},
		{"$5\r\nhello\r\n", nil},
		{"$6\r\nhello!\r\n", ErrReplyLength},
		{"+hello\r\n", nil},
		{"+hello!\r\n", ErrReplyLine},
		{"-hello!!", ErrReplyLine}, // too long before its CR arrives
		{"*3\r\n:1\r\n:2\r\n:3\r\n", nil},
		{"*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", ErrReplyTooLarge},
		{"*5\r\n", ErrReplyTooLarge},
		{"%3\r\n", nil}, // 6 children declared, none sent: waits (EOF)
		{"*3\r\n$5\r\n12345\r\n$5\r\n12345\r\n$5\r\n12345\r\n", ErrReplyTooLarge},
	} {
		want := tc.err
		if want == nil {
			want = io.EOF
		}
		if tc.in == "%3\r\n" {
			want = io.ErrUnexpectedEOF
		}
		for i, rd := range readers(tc.in) {
			r := NewReplyReader(rd, 16)
			r.SetLimits(lim)
			if _, err := readReplies(r); err != want {
				t.Errorf("%q reader %d: err = %v, want %v", tc.in, i, err, want)
			}
		}
	}
}

func TestValueAccessors(t *testing.T) {
	var rep Reply
	in := "|1\r\n+ttl\r\n:9\r\n%2\r\n$3\r\nkey\r\n*-1\r\n=8\r\nmkd:# hi\r\n*3\r\n:7\r\n$-1\r\n_\r\n"
	if _, err := rep.Parse([]byte(in)); err != nil {
		t.Fatal(err)
	}
	root := rep.Root()
	if root.Type() != TypeMap || root.Len() != 4 || !root.IsAggregate() || root.IsNull() || root.Bytes() != nil {
		t.Fatalf("root: %v len %d", root.Type(), root.Len())
	}
	if a, ok := root.Attribute(); !ok || dump(a) != "{+ttl::9}" {
		t.Fatalf("attribute %v", ok)
	}
	if string(root.Raw()) != in[len("|1\r\n+ttl\r\n:9\r\n"):] {
		t.Fatalf("Raw = %q", root.Raw())
	}
	k, v := root.Index(0), root.Index(1)
	if string(k.Bytes()) != "key" || !v.IsNull() || v.Type() != TypeArray || v.Len() != 0 || !v.IsAggregate() {
		t.Fatal("first pair")
	}
	if _, ok := k.Attribute(); ok {
		t.Fatal("key has an attribute")
	}
	if b := root.Index(2).Bytes(); string(b) != "mkd:# hi" {
		t.Fatalf("verbatim %q", b)
	}
	arr := root.Index(3)
	if n, ok := arr.Index(0).Int(); !ok || n != 7 {
		t.Fatalf("Int = %d, %v", n, ok)
	}
	if !arr.Index(1).IsNull() || arr.Index(1).Bytes() != nil || !arr.Index(2).IsNull() {
		t.Fatal("nulls")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Index out of range did not panic")
			}
		}()
		arr.Index(3)
	}()
	if (Value{}).Valid() || !root.Valid() {
		t.Fatal("Valid")
	}
	if TypeMap.String() != "map" || Type('x').String() != "type x" {
		t.Fatal("Type.String")
	}
}

// stripPrefix edits every bulk string element of v (recursively) that
// starts with prefix.
func stripPrefix(edits []Edit, v Value, prefix string) []Edit {
	if v.Type() == TypeBulkString && bytes.HasPrefix(v.Bytes(), []byte(prefix)) {
		return append(edits, Edit{At: v, Data: v.Bytes()[len(prefix):]})
	}
	for it := v.Iter(); it.Next(); {
		edits = stripPrefix(edits, it.Value(), prefix)
	}
	return edits
}

func TestAppendEdited(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"KEYS", "*3\r\n$7\r\nt1:key1\r\n$4\r\nt1:k\r\n$3\r\nt1:\r\n", "*3\r\n$4\r\nkey1\r\n$1\r\nk\r\n$0\r\n\r\n"},
		{"BLPOP", "*2\r\n$6\r\nt1:job\r\n$6\r\nt1:pay\r\n", "*2\r\n$3\r\njob\r\n$3\r\npay\r\n"},
		{"pub/sub push", ">3\r\n$7\r\nmessage\r\n$5\r\nt1:ch\r\n$2\r\nhi\r\n", ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"},
		{"XREAD RESP3", "%1\r\n$9\r\nt1:stream\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
			"%1\r\n$6\r\nstream\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"},
		{"with attribute", "|1\r\n$4\r\nt1:a\r\n:1\r\n*1\r\n$12\r\nt1:123456789\r\n",
			"|1\r\n$1\r\na\r\n:1\r\n*1\r\n$9\r\n123456789\r\n"},
		{"nothing to edit", "*1\r\n$-1\r\n", "*1\r\n$-1\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rep Reply
			if _, err := rep.Parse([]byte(tc.in)); err != nil {
				t.Fatal(err)
			}
			var edits []Edit
			if a, ok := rep.Root().Attribute(); ok {
				edits = stripPrefix(edits, a, "t1:")
			}
			edits = stripPrefix(edits, rep.Root(), "t1:")
			got, err := rep.AppendEdited(nil, edits)
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v\nwant %q", got, err, tc.want)
			}
			var again Reply
			if n, err := again.Parse(got); err != nil || n != len(got) {
				t.Fatalf("edited reply does not parse: %v", err)
			}
		})
	}

	var rep Reply
	if _, err := rep.Parse([]byte("*6\r\n+OK\r\n-ERR x\r\n!1\r\ne\r\n=5\r\ntxt:a\r\n:1\r\n$-1\r\n")); err != nil {
		t.Fatal(err)
	}
	root := rep.Root()
	s, e, b, v, i, nb := root.Index(0), root.Index(1), root.Index(2), root.Index(3), root.Index(4), root.Index(5)
	got, err := rep.AppendEdited(nil, []Edit{{s, []byte("QUEUED")}, {e, []byte("WRONGTYPE y")}, {b, nil}, {v, []byte("mkd:# b")}})
	if want := "*6\r\n+QUEUED\r\n-WRONGTYPE y\r\n!0\r\n\r\n=7\r\nmkd:# b\r\n:1\r\n$-1\r\n"; err != nil || string(got) != want {
		t.Fatalf("got %q, %v", got, err)
	}
	var other Reply
	other.Parse([]byte("+OK\r\n"))
	for _, bad := range [][]Edit{
		{{e, nil}, {s, nil}},          // out of order
		{{s, nil}, {s, nil}},          // twice
		{{s, []byte("a\r\nb")}},       // CR LF in a simple string
		{{v, []byte("txt")}},          // verbatim without format
		{{i, []byte("2")}},            // integer
		{{nb, []byte("x")}},           // null bulk
		{{root, []byte("x")}},         // aggregate
		{{other.Root(), []byte("x")}}, // another reply
		{{Value{}, []byte("x")}},      // zero Value
	} {
		if got, err := rep.AppendEdited([]byte("keep"), bad); err != ErrBadEdit || string(got) != "keep" {
			t.Errorf("%v: got %q, %v", bad, got, err)
		}
	}
}

func TestReplyReaderShrinkReset(t *testing.T) {
	var in []byte
	in = AppendBulk(in, bytes.Repeat([]byte("x"), 1<<20))
	in = AppendSimple(in, "OK")
	r := NewReplyReader(bytes.NewReader(in), 512)
	if rep, err := r.ReadReply(); err != nil || len(rep.Root().Bytes()) != 1<<20 {
		t.Fatal(err)
	}
	r.Shrink()
	if len(r.b.buf) != 512 {
		t.Fatalf("buffer %d after Shrink", len(r.b.buf))
	}
	if rep, err := r.ReadReply(); err != nil || dump(rep.Root()) != "+OK" {
		t.Fatal(err)
	}
	r.Reset(strings.NewReader("x"))
	if _, err := r.ReadReply(); err != ErrReplyType {
		t.Fatal(err)
	}
	r.Reset(strings.NewReader(":1\r\n"))
	if rep, err := r.ReadReply(); err != nil || dump(rep.Root()) != ":1" {
		t.Fatal(err)
	}
	if r.Buffered() != 0 {
		t.Fatal("Buffered")
	}
}
