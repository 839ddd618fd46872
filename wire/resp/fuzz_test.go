package resp

import (
	"bytes"
	"io"
	"slices"
	"testing"
)

var fuzzLimits = Limits{MaxMultibulkLen: 32, MaxBulkLen: 256, MaxInlineLen: 512, MaxQueryLen: 4096}

func commandSeeds() [][]byte {
	seeds := [][]byte{
		setCmd, setInline, pipeline(setCmd, 3),
		[]byte("*2\r\n$4\r\nECHO\r\n$0\r\n\r\nPING\r\n\r\n*0\r\n*-1\r\n"),
		[]byte("*1\r\n$4\r\nPINGxx"), []byte("*1\rX$4\r\nPING\r\n"), []byte("ECHO a\x00b\r\n"),
		[]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$300\r\n"),
	}
	for _, tc := range inlineCases {
		seeds = append(seeds, []byte("RPUSH l "+tc.line+"\r\n"))
	}
	for _, tc := range multibulkErrorCases {
		if len(tc.in) < 100 {
			seeds = append(seeds, []byte(tc.in))
		}
	}
	return seeds
}

// FuzzReadCommand: any bytes give commands then an error, never a panic;
// the outcome does not depend on how the bytes are split into reads; the
// buffer stays within MaxQueryLen; and the commands, re-encoded as multibulk
// or as quoted inline lines, read back the same.
func FuzzReadCommand(f *testing.F) {
	for _, s := range commandSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		read := func(rd io.Reader) ([][]string, error) {
			r := NewReader(rd, 16)
			r.SetLimits(fuzzLimits)
			cmds, err := readAll(r)
			if len(r.b.buf) > max(16, fuzzLimits.MaxQueryLen) {
				t.Fatalf("buffer grew to %d", len(r.b.buf))
			}
			for _, c := range cmds {
				if len(c) == 0 {
					t.Fatalf("command with %d arguments", len(c))
				}
			}
			return cmds, err
		}
		cmds, err := read(bytes.NewReader(data))
		if err == nil {
			t.Fatal("readAll ended without an error")
		}
		for _, sizes := range [][]int{{1}, {3, 1, 7}} {
			cmds2, err2 := read(&chunkReader{data: data, sizes: sizes})
			if !slices.EqualFunc(cmds, cmds2, slices.Equal) || !sameErr(err, err2) {
				t.Fatalf("reads of %v: %q, %v; whole: %q, %v", sizes, cmds2, err2, cmds, err)
			}
			// Nothing to read before each chunk (a drained non-blocking
			// socket): ReadCommand resumes the command in progress.
			cmds3, err3 := read(&stallReader{chunkReader: chunkReader{data: data, sizes: sizes}})
			if !slices.EqualFunc(cmds, cmds3, slices.Equal) || !sameErr(err, err3) {
				t.Fatalf("stalled reads of %v: %q, %v; whole: %q, %v", sizes, cmds3, err3, cmds, err)
			}
		}

		var mb, inl []byte
		var inlCmds [][]string
		for _, c := range cmds {
			bargs := make([][]byte, len(c))
			for i, a := range c {
				bargs[i] = []byte(a)
			}
			mb = AppendCommand(mb, bargs)
			if line := quoteInline(nil, c); len(line)-1 <= fuzzLimits.MaxInlineLen {
				inl = append(inl, line...)
				inlCmds = append(inlCmds, c)
			}
		}
		lim := fuzzLimits
		// Inline commands are bounded by MaxInlineLen only, as in redis-server.
		lim.MaxMultibulkLen, lim.MaxBulkLen, lim.MaxQueryLen = 1<<20, 1<<20, 1<<24
		for _, rt := range []struct {
			in   []byte
			want [][]string
		}{{mb, cmds}, {inl, inlCmds}} {
			r := NewReader(bytes.NewReader(rt.in), 16)
			r.SetLimits(lim)
			got, err := readAll(r)
			if err != io.EOF || !slices.EqualFunc(got, rt.want, slices.Equal) {
				t.Fatalf("round trip of %q: %q, %v; want %q", rt.in, got, err, rt.want)
			}
		}
	})
}

var fuzzReplyLimits = ReplyLimits{MaxDepth: 8, MaxBulkLen: 256, MaxElements: 256, MaxReplyLen: 4096}

// walk calls fn for v's attribute, v, and then its children, recursively:
// the order of the elements in the reply.
func walk(v Value, fn func(Value)) {
	if a, ok := v.Attribute(); ok {
		walk(a, fn)
	}
	fn(v)
	for it := v.Iter(); it.Next(); {
		walk(it.Value(), fn)
	}
}

func editable(v Value) bool {
	switch v.Type() {
	case TypeBulkString:
		return !v.IsNull()
	case TypeSimpleString, TypeSimpleError, TypeBlobError, TypeVerbatim:
		return true
	}
	return false
}

// FuzzReadReply: any bytes give replies then an error, never a panic; the
// outcome does not depend on how the bytes are split into reads; the buffer
// stays within MaxReplyLen; each reply re-encodes from its tree to its exact
// raw bytes; Parse agrees with ReplyReader; and editing every string yields
// a reply that parses to the same tree with the edited strings.
func FuzzReadReply(f *testing.F) {
	for _, tc := range replyCases {
		f.Add([]byte(tc.in))
	}
	f.Add(keysReply)
	f.Add(pushReply)
	f.Add([]byte("*2\r\n$3\r\nabc\r\n|1\r\n+a\r\n+b\r\n"))
	f.Add([]byte("%1\r\n|0\r\n+k\r\n~1\r\n>1\r\n(1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		read := func(rd io.Reader) ([]string, error) {
			r := NewReplyReader(rd, 16)
			r.SetLimits(fuzzReplyLimits)
			raws, err := readReplies(r)
			if len(r.b.buf) > max(16, fuzzReplyLimits.MaxReplyLen) {
				t.Fatalf("buffer grew to %d", len(r.b.buf))
			}
			return raws, err
		}
		raws, err := read(bytes.NewReader(data))
		if err == nil {
			t.Fatal("readReplies ended without an error")
		}
		for _, sizes := range [][]int{{1}, {3, 1, 7}} {
			raws2, err2 := read(&chunkReader{data: data, sizes: sizes})
			if !slices.Equal(raws, raws2) || !sameErr(err, err2) {
				t.Fatalf("reads of %v: %q, %v; whole: %q, %v", sizes, raws2, err2, raws, err)
			}
			// Nothing to read before each chunk: ReadReply resumes.
			raws3, err3 := read(&stallReader{chunkReader: chunkReader{data: data, sizes: sizes}})
			if !slices.Equal(raws, raws3) || !sameErr(err, err3) {
				t.Fatalf("stalled reads of %v: %q, %v; whole: %q, %v", sizes, raws3, err3, raws, err)
			}
		}
		var rep, edited Reply
		rep.SetLimits(fuzzReplyLimits)
		edited.SetLimits(fuzzReplyLimits)
		if len(raws) > 0 {
			if n, err := rep.Parse(data); err != nil || n != len(raws[0]) {
				t.Fatalf("Parse = %d, %v; ReplyReader read %d bytes", n, err, len(raws[0]))
			}
		}
		for _, raw := range raws {
			if n, err := rep.Parse([]byte(raw)); err != nil || n != len(raw) {
				t.Fatalf("Parse(%q) = %d, %v", raw, n, err)
			}
			if enc := encodeValue(nil, rep.Root()); string(enc) != raw {
				t.Fatalf("%q re-encoded as %q", raw, enc)
			}
			var edits []Edit
			var want []string
			walk(rep.Root(), func(v Value) {
				s := string(v.Raw())
				if editable(v) {
					edits = append(edits, Edit{At: v, Data: append(v.Bytes(), 'x')})
					s = string(v.Bytes()) + "x"
				}
				want = append(want, string(v.Type())+s)
			})
			out, err := rep.AppendEdited(nil, edits)
			if err != nil {
				t.Fatalf("AppendEdited: %v", err)
			}
			lim := fuzzReplyLimits
			lim.MaxBulkLen, lim.MaxReplyLen = 1<<20, 1<<20
			edited.SetLimits(lim)
			if n, err := edited.Parse(out); err != nil || n != len(out) {
				t.Fatalf("edited %q: %d, %v", out, n, err)
			}
			var got []string
			walk(edited.Root(), func(v Value) {
				s := string(v.Raw())
				if editable(v) {
					s = string(v.Bytes())
				}
				got = append(got, string(v.Type())+s)
			})
			// Aggregates' raw bytes contain edited children; compare them
			// by type only.
			for i := range want {
				if i < len(got) && Type(want[i][0]).IsAggregate() {
					want[i], got[i] = want[i][:1], got[i][:1]
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("edited %q:\n got %q\nwant %q", out, got, want)
			}
		}
	})
}
