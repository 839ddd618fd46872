package redis

import (
	"context"
	"strconv"
	"time"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
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

// loopHit answers, on the loop, a read of a cacheable key that the cache
// holds, as serve would (the tenant's rules, its rate, the metrics), and
// reports true; it reports false, having changed nothing, for anything
// else (which then runs on the client's goroutine). touchesCacheable has
// located the keys.
func (s *clientConn) loopHit(cmd *keyspec.Command, args [][]byte, lerr error) bool {
	nc, tc := s.be.near, s.cache
	if lerr != nil || len(s.keyIdx) != 1 || s.dedicated || s.resp3 || s.inMulti || !nc.live.Load() ||
		!cmd.Flags.Has(keyspec.FlagReadonly) || cmd.Flags.Has(keyspec.FlagWrite) || !cacheableRead(cmd) {
		return false
	}
	s.qmu.Lock()
	full := s.outq.len() >= maxOwedShared-1
	s.qmu.Unlock()
	if full {
		return false
	}
	// For a plain read, prepare only rewrites (no connection state).
	out, p, rp, rerr := s.prepare(args, cmd, lerr)
	if rerr != nil || rp != rules.ReplyPlain || p.dedicated || p.script {
		return false
	}
	s.nsKey = s.ns.AppendKey(s.nsKey[:0], args[s.keyIdx[0]])
	reply, ok := nc.get(tc, s.nsKey, out)
	if !ok {
		return false
	}
	s.cmds.Inc()
	if rate := s.tenant.Limits.CommandsPerSecond; rate > 0 && !s.rate.take(time.Now(), rate) {
		s.srv.metrics.refusals.WithLabelValues(s.label, "rate-limit").Inc()
		s.writeLocal(resp.AppendError(nil, "TRYAGAIN tenantguard: tenant "+s.tenant.ID+" is over its command rate of "+strconv.Itoa(rate)+"/s"))
		return true
	}
	tc.hits.Inc()
	s.writeLocal(reply)
	return true
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
	tc, nc := s.cache, s.be.near
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
			// A hit behind owed replies waits in the queue: bounded as
			// forwarded commands are.
			s.waitOwedBelow(maxOwedShared)
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
