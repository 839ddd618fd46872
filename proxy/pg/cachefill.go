package pg

import (
	"bytes"
	"context"
	"time"

	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// cacheFill is a miss being filled. The client arms it before sending the
// statement (with the generations of the tables it reads, taken then);
// the server connection takes it with the first message it stages, and
// its read loop feeds it what the client sees, up to the ReadyForQuery.
// Anything unexpected (an error, a notice, a parameter change, an
// asynchronous notification, a suspended portal, a result too large)
// gives it up.
type cacheFill struct {
	rc       *resultCache
	tenant   *tenantCache
	view     *cacheView
	flushGen uint64
	key      []byte
	hash     uint64
	tables   []int
	allGens  []uint64
	tenGens  []uint64
	ttl      time.Duration
	budget   int64
	maxBytes int64
	status   byte // the ReadyForQuery status the exchange must end with
	extended bool

	rowDesc, rows, tag []byte
}

// newCacheFill arms a fill of key for tenant tc under view v.
func newCacheFill(rc *resultCache, tc *tenantCache, v *cacheView, p *stmtPlan, key []byte, h uint64) *cacheFill {
	f := &cacheFill{rc: rc, tenant: tc, view: v, flushGen: rc.flushGen.Load(), key: bytes.Clone(key), hash: h,
		tables: p.tables, allGens: make([]uint64, len(p.tables)), tenGens: make([]uint64, len(p.tables))}
	tg := tc.gensFor(v)
	for i, t := range p.tables {
		f.allGens[i] = v.allGen[t].Load()
		f.tenGens[i] = tg.g[t].Load()
	}
	return f
}

// capture feeds one message the client was sent; it reports whether the
// fill is over, stored or given up.
func (f *cacheFill) capture(typ byte, raw []byte) (over bool) {
	switch typ {
	case wire.MsgParseComplete, wire.MsgBindComplete:
		if !f.extended || f.rowDesc != nil || f.rows != nil || f.tag != nil {
			return true
		}
		return false
	case wire.MsgRowDescription, wire.MsgNoData:
		if f.rowDesc != nil || f.rows != nil || f.tag != nil {
			return true
		}
		f.rowDesc = bytes.Clone(raw)
	case wire.MsgDataRow:
		if f.tag != nil {
			return true
		}
		f.rows = append(f.rows, raw...)
	case wire.MsgCommandComplete:
		if f.tag != nil {
			return true
		}
		f.tag = bytes.Clone(raw)
	case wire.MsgReadyForQuery:
		if len(raw) == wire.HeaderLen+1 && raw[wire.HeaderLen] == f.status && f.tag != nil && (f.extended || f.rowDesc != nil) {
			f.store()
		}
		return true
	default:
		return true
	}
	return int64(len(f.key)+len(f.rowDesc)+len(f.rows)+len(f.tag)+entryOverhead) > f.maxBytes
}

// store puts the captured result in the cache, unless a write it may not
// reflect was noted since the statement was sent.
func (f *cacheFill) store() {
	rc := f.rc
	if rc.view.Load() != f.view || rc.flushGen.Load() != f.flushGen {
		return
	}
	tg := f.tenant.gensFor(f.view)
	for i, t := range f.tables {
		if f.view.allGen[t].Load() != f.allGens[i] || tg.g[t].Load() != f.tenGens[i] {
			f.tenant.m.evicted("invalidated").Inc()
			return
		}
	}
	now := time.Now()
	e := &cacheEntry{key: f.key, hash: f.hash, tenant: f.tenant, view: f.view, flushGen: f.flushGen,
		tables: f.tables, allGens: f.allGens, tenGens: f.tenGens, created: now, expires: now.Add(f.ttl),
		rowDesc: f.rowDesc, rows: f.rows, tag: f.tag}
	e.cost = int64(len(e.key)+len(e.rowDesc)+len(e.rows)+len(e.tag)) + entryOverhead
	rc.put(e, f.budget, f.ttl)
}

// cacheObserve runs in the read loop, with mu held, after account: it
// feeds the fill in progress, and at a ReadyForQuery that ends the owner's
// transaction applies what its writes did to the cache. It returns a cache
// whose barrier the ReadyForQuery must wait for (see cachelisten.go).
func (sc *serverConn) cacheObserve(typ byte, out forward) *resultCache {
	if out.write == nil {
		return nil // the proxy's own replies
	}
	if f := sc.fill; f != nil {
		if out.prefix != nil || f.capture(typ, out.write) {
			sc.fill = nil
		}
	}
	if typ != wire.MsgReadyForQuery || sc.owner == nil || sc.tx != wire.TxIdle {
		return nil
	}
	c := &sc.owner.cache
	// Loads before stores: without cache rules these are always false,
	// and a load does not contend for the cache line.
	if c.readOnlyTx.Load() {
		c.readOnlyTx.Store(false)
	}
	if c.taintTx.Load() {
		c.taintTx.Store(false)
	}
	if !c.hasPending.Load() {
		return nil
	}
	return c.commitWrites(sc.owner.tenant, sc.replies.empty())
}

// waitBarrierFor waits, bounded, for the notifications of the transaction
// s just committed, before s hears of the commit.
func (rc *resultCache) waitBarrierFor(s *clientConn) {
	ctx, cancel := context.WithTimeout(context.Background(), rc.pool.cfg.ConnectTimeout)
	defer cancel()
	if s != nil {
		stop := context.AfterFunc(s.ctx, cancel) // the client went away
		defer stop()
	}
	rc.waitBarrier(ctx)
}
