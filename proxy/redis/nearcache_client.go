package redis

import (
	"context"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
)

// touchesCacheable reports whether a command of a client whose tenant has
// a near cache names a cacheable key: it then runs on the client's
// goroutine (it may dial the cache's connections, or switch to them).
func (s *clientConn) touchesCacheable(cmd *keyspec.Command, args [][]byte) bool {
	if cmd == nil || !cmd.HasKeys() {
		return false
	}
	idx, err := cmd.AppendKeyIndexes(s.keyIdx[:0], args)
	s.keyIdx = idx
	if err != nil {
		return false
	}
	for _, i := range idx {
		if i < len(args) && s.cache.cacheable(args[i]) {
			return true
		}
	}
	return false
}

// viaNearCache serves a command on cacheable keys through the near cache:
// a read from it, or on a miss from the fill connection (which stores the
// reply); a write evicts its keys at once and goes on the fill connection
// too, so that no miss sent after it reads what it replaced. It reports
// false, having done nothing, for a command that goes the usual way
// (no cacheable key, a read that cannot be cached, the cache's
// connections unavailable).
func (s *clientConn) viaNearCache(ctx context.Context, out []byte, p plan, rp rules.Plan, cmd *keyspec.Command, args [][]byte) (bool, error) {
	if !s.touchesCacheable(cmd, args) {
		return false, nil
	}
	tc, nc := s.cache, s.srv.near
	// On the shared connections, in RESP2, outside MULTI, a reply passed
	// on as it is: the cache's connection may serve it.
	eligible := rp == rules.ReplyPlain && !s.dedicated && !s.resp3 && !s.inMulti && !p.dedicated && !p.script
	readonly := cmd.Flags.Has(keyspec.FlagReadonly) && !cmd.Flags.Has(keyspec.FlagWrite)
	if readonly {
		if !eligible || len(s.keyIdx) != 1 || !cacheableRead(cmd) {
			return false, nil
		}
		s.nsKey = s.ns.AppendKey(s.nsKey[:0], args[s.keyIdx[0]])
		if reply, ok := nc.get(tc, s.nsKey, out); ok {
			tc.hits.Inc()
			s.writeLocal(reply)
			return true, nil
		}
		tc.misses.Inc()
		u, err := nc.conn(ctx)
		if err != nil {
			return false, nil
		}
		p.near, p.fill = u, nc.startFill(tc, s.nsKey, out)
		return true, s.forward(ctx, out, p)
	}
	for _, i := range s.keyIdx {
		if i < len(args) && tc.cacheable(args[i]) {
			s.nsKey = s.ns.AppendKey(s.nsKey[:0], args[i])
			nc.invalidate(s.nsKey)
		}
	}
	if !eligible {
		// A script, or a command queued in MULTI, runs elsewhere: evicted
		// now, and again by redis-server's invalidation once it has run.
		return false, nil
	}
	u, err := nc.conn(ctx)
	if err != nil {
		return false, nil
	}
	p.near = u
	return true, s.forward(ctx, out, p)
}
