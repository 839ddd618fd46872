package pg

import (
	"encoding/binary"
	"testing"
)

// FuzzBindMentionsClock: the result cache reads a client's Bind (its
// parameter formats, values and result formats) before the server does;
// any bytes must give an answer, never a panic, and a Bind it cannot read
// counts as mentioning the clock (not cached).
func FuzzBindMentionsClock(f *testing.F) {
	bind := func(formats []int16, values [][]byte, results []int16) []byte {
		var b []byte
		b = binary.BigEndian.AppendUint16(b, uint16(len(formats)))
		for _, x := range formats {
			b = binary.BigEndian.AppendUint16(b, uint16(x))
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(values)))
		for _, v := range values {
			if v == nil {
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
				continue
			}
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(results)))
		for _, x := range results {
			b = binary.BigEndian.AppendUint16(b, uint16(x))
		}
		return b
	}
	f.Add(bind(nil, [][]byte{[]byte("acme-item-1")}, nil))
	f.Add(bind([]int16{0}, [][]byte{[]byte("now")}, []int16{1}))
	f.Add(bind([]int16{1, 0}, [][]byte{{0, 0, 0, 1}, []byte(" Today ")}, []int16{1, 1}))
	f.Add(bind(nil, [][]byte{nil}, nil))
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, tail []byte) {
		if bindMentionsClock(tail) {
			return
		}
		// Read as a whole Bind: at least the three counts.
		if len(tail) < 6 {
			t.Fatalf("%x read as a whole Bind", tail)
		}
	})
}
