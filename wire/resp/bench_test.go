package resp

import (
	"bytes"
	"testing"
)

// loopReader serves data over and over, in reads as large as asked.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

// pipeline returns n copies of one command, as a pipelining client sends.
func pipeline(cmd []byte, n int) []byte { return bytes.Repeat(cmd, n) }

var (
	setCmd       = []byte("*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$5\r\nvalue\r\n")
	setInline    = []byte("SET key:000000000042 value\r\n")
	bulkReply    = []byte("$5\r\nvalue\r\n")
	keysReply    = []byte("*4\r\n$7\r\nt1:key1\r\n$7\r\nt1:key2\r\n$7\r\nt1:key3\r\n$7\r\nt1:key4\r\n")
	pushReply    = []byte(">3\r\n$7\r\nmessage\r\n$10\r\nt1:channel\r\n$5\r\nhello\r\n")
	benchBufSize = 16 << 10
)

func benchReadCommand(b *testing.B, cmd []byte) {
	r := NewReader(&loopReader{data: pipeline(cmd, 1000)}, benchBufSize)
	b.SetBytes(int64(len(cmd)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadCommand(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadCommand reads a pipelined stream of SET key value.
func BenchmarkReadCommand(b *testing.B) { benchReadCommand(b, setCmd) }

// BenchmarkReadCommandInline reads a pipelined stream of inline SET key value.
func BenchmarkReadCommandInline(b *testing.B) { benchReadCommand(b, setInline) }

func benchReadReply(b *testing.B, reply []byte) {
	r := NewReplyReader(&loopReader{data: pipeline(reply, 1000)}, benchBufSize)
	b.SetBytes(int64(len(reply)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadReply(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadReplyBulk reads a stream of "$5\r\nvalue\r\n" replies.
func BenchmarkReadReplyBulk(b *testing.B) { benchReadReply(b, bulkReply) }

// BenchmarkReadReplyKeys reads a stream of four-key KEYS replies.
func BenchmarkReadReplyKeys(b *testing.B) { benchReadReply(b, keysReply) }

// BenchmarkParseReplyBulk parses "$5\r\nvalue\r\n" from a byte slice.
func BenchmarkParseReplyBulk(b *testing.B) {
	var rep Reply
	b.SetBytes(int64(len(bulkReply)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rep.Parse(bulkReply); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewritePush parses a pub/sub message push and strips the
// tenant prefix from its channel into an output buffer.
func BenchmarkRewritePush(b *testing.B) {
	var rep Reply
	out := make([]byte, 0, 256)
	edits := make([]Edit, 0, 1)
	b.SetBytes(int64(len(pushReply)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rep.Parse(pushReply); err != nil {
			b.Fatal(err)
		}
		ch := rep.Root().Index(1)
		edits = append(edits[:0], Edit{At: ch, Data: ch.Bytes()[3:]})
		var err error
		if out, err = rep.AppendEdited(out[:0], edits); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendCommand encodes SET key value.
func BenchmarkAppendCommand(b *testing.B) {
	args := [][]byte{[]byte("SET"), []byte("key:000000000042"), []byte("value")}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendCommand(buf[:0], args)
	}
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	for _, cmd := range [][]byte{setCmd, setInline} {
		r := NewReader(&loopReader{data: pipeline(cmd, 1000)}, benchBufSize)
		r.ReadCommand() // size the argument slice
		if n := testing.AllocsPerRun(5000, func() {
			if _, err := r.ReadCommand(); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("ReadCommand(%q): %v allocations", cmd, n)
		}
	}
	for _, reply := range [][]byte{bulkReply, keysReply, pushReply} {
		r := NewReplyReader(&loopReader{data: pipeline(reply, 1000)}, benchBufSize)
		r.ReadReply()
		if n := testing.AllocsPerRun(5000, func() {
			rep, err := r.ReadReply()
			if err != nil {
				t.Fatal(err)
			}
			for it := rep.Root().Iter(); it.Next(); {
				_ = it.Value().Bytes()
			}
		}); n != 0 {
			t.Errorf("ReadReply(%q): %v allocations", reply, n)
		}
	}
}
