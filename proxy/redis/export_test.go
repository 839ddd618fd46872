package redis

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
