package redis

import (
	"crypto/tls"
	"io"
	"net"
	"time"
)

// tlsRecordHandshake is the first byte of a TLS connection: a ClientHello
// is a handshake record (RFC 8446 §5.1, content type 22). No RESP frame
// or inline command starts with it.
const tlsRecordHandshake = 0x16

// plaintextRefused is what a client that does not start a TLS handshake
// reads when the listener requires TLS, in RESP, so that redis-cli or a
// driver shows it instead of a reset connection.
var plaintextRefused = []byte("-ERR this port requires TLS: connect with TLS (redis-cli --tls, rediss://)\r\n")

// plaintextDrainLimit and plaintextLinger bound what is read from a
// refused plaintext client after its refusal, so that closing with its
// input unread does not reset the connection before it reads the reply.
const (
	plaintextDrainLimit = 64 << 10
	plaintextLinger     = time.Second
)

// acceptTLS starts TLS on a new client connection when the listener has
// it: the first byte tells a TLS client (a handshake record) from a
// plaintext one, which is served as before if the listener allows
// plaintext, and refused with a RESP error otherwise. It returns the
// connection to serve (c itself when plaintext) or nil when c was refused
// or its handshake failed; the caller closes c either way. The sniffing
// and the handshake together take at most the authentication timeout.
func (srv *Server) acceptTLS(c net.Conn) net.Conn {
	if srv.cfg.TLS == nil {
		return c
	}
	_ = c.SetDeadline(time.Now().Add(srv.cfg.AuthTimeout))
	first, c, err := peekByte(c)
	if err != nil {
		srv.log.Debug("redis client left before its first byte", "remote", c.RemoteAddr().String(), "error", err)
		return nil
	}
	if first != tlsRecordHandshake {
		if srv.cfg.AllowPlaintext {
			_ = c.SetDeadline(time.Time{})
			return c
		}
		srv.metrics.tlsRefused.WithLabelValues("plaintext").Inc()
		srv.log.Debug("redis client refused: plaintext on a TLS listener", "remote", c.RemoteAddr().String())
		refusePlaintext(c)
		srv.acc.HandshakeFailed()
		return nil
	}
	tc := tls.Server(c, srv.cfg.TLS)
	if err := tc.Handshake(); err != nil {
		srv.metrics.tlsRefused.WithLabelValues("handshake").Inc()
		srv.log.Debug("redis client TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
		srv.acc.HandshakeFailed()
		return nil
	}
	// The client's read deadline is set again for authentication.
	_ = tc.SetDeadline(time.Time{})
	return tc
}

// refusePlaintext tells a plaintext client TLS is required and ends the
// connection gently: what it sent is read and dropped (bounded), the
// refusal written, the write side shut, and its close waited for a moment,
// so its kernel does not discard the refusal on a reset.
func refusePlaintext(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(plaintextLinger))
	if _, err := c.Write(plaintextRefused); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, plaintextDrainLimit))
}

// prefixConn is a connection whose first bytes were already read: Read
// returns them first.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// peekByteByRead is peekByte where the socket cannot be peeked: the byte
// is read, and the connection returned gives it back first (it has no
// descriptor then, so its client does not join the event loop).
func peekByteByRead(c net.Conn) (byte, net.Conn, error) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, c, err
	}
	return b[0], &prefixConn{Conn: c, prefix: b[:]}, nil
}
