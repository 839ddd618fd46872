package pg

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// MaxStartupPacket is PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
const MaxStartupPacket = 10000

// Request codes carried in the protocol-version word of untyped startup packets.
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
)

// ReadStartup reads one untyped startup-phase packet and decodes it into a
// *pgproto3.SSLRequest, *pgproto3.GSSEncRequest, *pgproto3.CancelRequest or
// *pgproto3.StartupMessage. A StartupMessage of protocol 3.x with a minor
// version other than 0 is returned as is; the caller negotiates it down.
func ReadStartup(br io.Reader) (pgproto3.FrontendMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > MaxStartupPacket {
		return nil, fmt.Errorf("invalid startup packet length %d", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, fmt.Errorf("read startup packet: %w", err)
	}
	return DecodeStartup(body)
}

// DecodeStartup decodes the body (after the length word) of a startup packet.
func DecodeStartup(body []byte) (pgproto3.FrontendMessage, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("startup packet too short")
	}
	code := binary.BigEndian.Uint32(body)
	var msg interface {
		pgproto3.FrontendMessage
	}
	switch {
	case code == sslRequestCode:
		msg = &pgproto3.SSLRequest{}
	case code == gssEncRequestCode:
		msg = &pgproto3.GSSEncRequest{}
	case code == cancelRequestCode:
		msg = &pgproto3.CancelRequest{}
	case code>>16 == 3:
		return decodeStartupMessage(body)
	default:
		return nil, fmt.Errorf("unsupported frontend protocol %d.%d: server supports 3.0", code>>16, code&0xffff)
	}
	if err := msg.Decode(body); err != nil {
		return nil, fmt.Errorf("decode %T: %w", msg, err)
	}
	return msg, nil
}

// decodeStartupMessage parses a 3.x StartupMessage. pgproto3's decoder
// rejects minor versions it does not know, but PostgreSQL accepts any 3.x and
// answers NegotiateProtocolVersion, so the parameters are parsed here.
func decodeStartupMessage(body []byte) (*pgproto3.StartupMessage, error) {
	msg := &pgproto3.StartupMessage{
		ProtocolVersion: binary.BigEndian.Uint32(body),
		Parameters:      map[string]string{},
	}
	rest := body[4:]
	for {
		if len(rest) == 0 {
			return nil, fmt.Errorf("startup packet: missing terminator")
		}
		if rest[0] == 0 {
			if len(rest) != 1 {
				return nil, fmt.Errorf("startup packet: trailing bytes after terminator")
			}
			return msg, nil
		}
		key, after, ok := cutNul(rest)
		if !ok {
			return nil, fmt.Errorf("startup packet: unterminated parameter name")
		}
		val, after2, ok := cutNul(after)
		if !ok {
			return nil, fmt.Errorf("startup packet: parameter %q has no value", key)
		}
		if _, dup := msg.Parameters[key]; dup {
			return nil, fmt.Errorf("startup packet: parameter %q given twice", key)
		}
		msg.Parameters[key] = val
		rest = after2
	}
}

func cutNul(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// CancelRequest encodes a CancelRequest packet for a backend.
func CancelRequest(pid uint32, secret []byte) []byte {
	b := make([]byte, 0, 16+len(secret))
	b = binary.BigEndian.AppendUint32(b, uint32(12+len(secret)))
	b = binary.BigEndian.AppendUint32(b, cancelRequestCode)
	b = binary.BigEndian.AppendUint32(b, pid)
	return append(b, secret...)
}
