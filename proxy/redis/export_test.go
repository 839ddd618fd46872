package redis

import (
	"crypto/tls"
)

// LoopSessions is how many sessions the event loop serves now (-1: none
// running), for tests.
func (srv *Server) LoopSessions() int {
	srv.mu.Lock()
	l := srv.lp
	srv.mu.Unlock()
	if l == nil {
		return -1
	}
	return l.sessions()
}

// KillNearCacheTracking ends the near cache's invalidation connection as
// a network failure would, for tests.
func (srv *Server) KillNearCacheTracking() { srv.near.killTracking() }

// UpstreamTLSStates are the TLS states of the shared (on a cluster, per
// master) and script upstream connections open now (a plaintext one has none), for tests.
func (srv *Server) UpstreamTLSStates() []tls.ConnectionState {
	srv.mu.Lock()
	conns := srv.sharedConns()
	for _, u := range srv.scriptUp {
		conns = append(conns, u)
	}
	srv.mu.Unlock()
	if c := srv.cluster; c != nil {
		c.mu.Lock()
		for _, u := range c.shared {
			conns = append(conns, u)
		}
		c.mu.Unlock()
	}
	var out []tls.ConnectionState
	for _, u := range conns {
		if u == nil {
			continue
		}
		if tc, ok := u.conn.(*tls.Conn); ok {
			out = append(out, tc.ConnectionState())
		}
	}
	return out
}
