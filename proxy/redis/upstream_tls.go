package redis

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
)

// TLS to redis-server (Config.UpstreamTLS).
//
// Every upstream connection the listener opens goes through dialAs:
// the shared ones, the dedicated ones (MULTI, blocking commands, pub/sub,
// RESP3), the tenants' script connections, the near cache's fill and
// tracking connections and every Redis Cluster node's. With TLS, dialAs
// completes a handshake before HELLO and the connection is a *tls.Conn.
//
// A *tls.Conn has no descriptor of its own to read or write (its bytes
// are records, decrypted in Go), so it gets no sock: the event loop
// (loop_linux.go) does not take it, and its replies are read by a
// readLoop goroutine, as a dedicated connection's are. Clients on the
// loop still send to it (upConn.send, flush), unchanged. The plaintext
// path is untouched: its connections have a sock and join the loop as
// before; the only cost there is the nil check in dialAs.
//
// The handshake offers what Go offers by default, X25519MLKEM768 first
// (the hybrid post-quantum key exchange), then X25519 and the NIST
// curves, so a redis-server whose OpenSSL lacks ML-KEM still connects,
// on X25519.

// upstreamTLS starts TLS on raw, a connection just dialled to addr, and
// completes the handshake within ctx. The server name is the
// configuration's, else addr's host.
func (srv *Server) upstreamTLS(ctx context.Context, raw net.Conn, addr string) (*tls.Conn, error) {
	cfg := srv.cfg.UpstreamTLS()
	if cfg == nil {
		return nil, fmt.Errorf("upstream TLS to %s: no configuration", addr)
	}
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("upstream TLS handshake with %s: %w", addr, err)
	}
	st := tc.ConnectionState()
	srv.log.Debug("redis upstream TLS", "node", addr, "version", tls.VersionName(st.Version), "group", st.CurveID.String())
	return tc, nil
}
