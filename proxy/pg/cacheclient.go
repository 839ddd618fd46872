package pg

import (
	"bytes"
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// The client's side of the result cache.
//
// When the cache answers. Only between requests: the client holds no
// server connection, or holds one with nothing owed in either direction,
// outside a transaction or inside one it began READ ONLY at READ
// COMMITTED (each statement of which sees whatever was committed when it
// started, so an earlier result is as good as in autocommit). Not after
// the client changed session state the key does not cover (SET of an
// unkeyed setting, DDL, temporary tables, cursors, prepared SQL): until its
// server connection is reset (in transaction pooling, when it goes back to
// the pool), or the transaction ends for SET LOCAL.
//
// What it answers. A simple Query is looked up at once: a hit gets
// RowDescription, DataRows, CommandComplete and ReadyForQuery, byte for
// byte what the server sent when the result was stored. An extended-protocol
// exchange is looked up at its Sync: its messages are held (not sent) until
// then, and only the shape [Parse] Bind [Describe portal] Execute Sync on
// the unnamed portal qualifies (what pgx, libpq's PQexecParams and
// PQexecPrepared, and pgbench -M extended/prepared send); anything else
// arriving first sends what is held, as it would have gone. A hit gets what
// PostgreSQL sends for those messages: ParseComplete, BindComplete, the
// portal's RowDescription (stored with the result formats the Bind asked
// for, which are part of the key), DataRows, CommandComplete,
// ReadyForQuery. A Parse answered so is recorded for the client as if
// prepared (the server prepares it when the client next needs it upstream);
// one that reuses an existing statement name is not answered (PostgreSQL
// answers 42P05). Holding costs no round trip: the client expects nothing
// before its Sync (or a Flush, which sends what is held).
//
// The key: tenant, the statement text (and parameter types), the Bind's
// parameter formats, values and result formats, and the client's settings
// that change results (DateStyle, IntervalStyle, TimeZone,
// extra_float_digits, search_path, bytea_output; the upstream role,
// client_encoding, standard_conforming_strings and lc_* are the pool's).
// A constant or text parameter that reads as the clock in a date or time
// ('now', 'today', …) keeps the statement out.
//
// Writes. Every statement sent upstream is noted: the tables it writes are
// invalidated when its transaction ends (the ReadyForQuery that says
// idle), before the client sees that ReadyForQuery, so the client and
// every other client of this sidecar read its writes from then on. A
// statement that may write tables it does not name (a function not
// declared stable, CALL, a table with other triggers or rules) makes that
// ReadyForQuery wait for a round trip on the cache's listening connection,
// by which time the triggers' notifications of the commit are in.

// clientCache is a client's side of the result cache. The client's
// goroutine owns it, except the atomics and pending.
type clientCache struct {
	rc *resultCache
	tc *tenantCache

	// The extended-protocol segment held until its Sync.
	held      []heldMsg
	buf       []byte
	status    byte // the transaction status when holding began
	replaying bool // sending what was held: send flushes once, at the end

	key  []byte     // scratch for keys
	fill *cacheFill // armed for the statement about to be sent; stage takes it

	unnamedClock    clockScan // whether the unnamed statement's text mentions the clock
	unnamedClockGen uint64

	// taintConn: the client left session state the key does not cover, on
	// its server connection (cleared when the connection is taken from
	// it); taintTx: in its transaction (cleared when that ends).
	// readOnlyTx: its transaction began READ ONLY at READ COMMITTED.
	taintConn, taintTx, readOnlyTx atomic.Bool

	pmu     sync.Mutex
	pending pendingWrites
	// hasPending: pending holds writes; read without pmu by the server
	// connection's read loop at every ReadyForQuery, so a client that
	// wrote nothing cacheable costs it no lock.
	hasPending atomic.Bool
}

// clockScan caches whether a statement's text mentions the clock.
type clockScan uint8

const (
	clockUnknown clockScan = iota
	clockNo
	clockYes
)

// heldMsg is one held client message: its bytes are buf[off:off+n].
type heldMsg struct {
	typ     byte
	off, n  int
	verdict *firewall.Verdict
}

// pendingWrites are the tables a client's statements wrote, by policy
// name, waiting for their transaction to end; barrier and flush as in
// stmtPlan.
type pendingWrites struct {
	rc      *resultCache
	tables  []string
	barrier bool
	flush   bool
}

// cacheKeyParams are the tracked settings a result depends on.
var cacheKeyParams = func() []int {
	var out []int
	for _, name := range []string{"DateStyle", "IntervalStyle", "TimeZone", "extra_float_digits", "search_path", "bytea_output"} {
		out = append(out, trackedIndex(name))
	}
	return out
}()

// harmlessSettings change no result: setting them leaves the cache on.
// The reported ones (DateStyle, IntervalStyle, TimeZone) change results
// but are part of the key: the client's values follow the server's
// ParameterStatus.
var harmlessSettings = map[string]bool{
	"statement_timeout": true, "lock_timeout": true, "idle_in_transaction_session_timeout": true,
	"idle_session_timeout": true, "application_name": true, "client_min_messages": true,
	"work_mem": true, "maintenance_work_mem": true, "jit": true, "random_page_cost": true,
	"seq_page_cost": true, "effective_cache_size": true,
	"datestyle": true, "intervalstyle": true, "timezone": true,
}

// enabled reports whether the policy has cache rules for the client's
// pool, finding (or starting) the pool's cache. The client's own rules are
// looked at per statement.
func (c *clientCache) enabled(s *clientConn) bool {
	if s.srv.fw == nil || !s.snap.PgCache().Enabled() {
		return false
	}
	if c.rc == nil || c.rc.pool != s.pool {
		c.rc = s.srv.caches.forPool(s.pool)
		if c.rc == nil {
			return false
		}
		c.tc = c.rc.tenant(s.tenant, s.label)
	}
	return true
}

// usable returns the view and policy the client may use the cache under
// now, or false (counted under a reason).
func (s *clientConn) cacheUsable() (*cacheView, *cachePolicy, bool) {
	c := &s.cache
	v := c.rc.view.Load()
	if v == nil {
		c.tc.m.skip("listener_down")
		return nil, nil, false
	}
	cp, changed := v.policyFor(s.snap)
	if changed {
		c.rc.flush("policy_changed")
	}
	if c.taintConn.Load() || c.taintTx.Load() {
		c.tc.m.skip("session_state")
		return nil, nil, false
	}
	if s.ending() || !s.permits(firewall.Read) {
		return nil, nil, false
	}
	return v, cp, true
}

// cacheQuiescent reports whether the client may be answered from the cache
// now, and the transaction status to answer with.
func (s *clientConn) cacheQuiescent() (byte, bool) {
	sc := s.sc.Load()
	if sc == nil {
		return wire.TxIdle, true
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.owner != s && s.sc.Load() != sc {
		// The read loop gave the connection back to the pool after our
		// last ReadyForQuery, between our load and our lock (detach clears
		// s.sc under mu): between transactions, with nothing owed. It
		// happens whenever a client asks again at once, as pgbench does.
		if s.sc.Load() == nil {
			return wire.TxIdle, true
		}
		return 0, false // attached to another already: look again next time
	}
	if sc.owner != s || sc.state != connAttached || !sc.replies.empty() || sc.sending || sc.unsynced || sc.cancels > 0 {
		return 0, false
	}
	switch sc.tx {
	case wire.TxIdle:
		return wire.TxIdle, true
	case wire.TxInBlock:
		if s.cache.readOnlyTx.Load() {
			return wire.TxInBlock, true
		}
	}
	return 0, false
}

// cachePlan returns the plan and TTL for a statement of the client, or
// false (counted) when its results are not cached for it.
func (s *clientConn) cachePlan(v *cacheView, cp *cachePolicy, vd *firewall.Verdict) (*stmtPlan, time.Duration, bool) {
	if vd == nil {
		return nil, 0, false
	}
	p := cp.plan(v, vd)
	if !p.cacheable {
		s.cache.tc.m.skip(p.skip)
		return nil, 0, false
	}
	ttl, ok := p.ttlFor(cp.rules, s.tenant)
	if !ok {
		s.cache.tc.m.skip("not_opted_in")
		return nil, 0, false
	}
	return p, ttl, true
}

// cacheStart looks a screened message up: a simple Query is answered on a
// hit, or armed to fill on a miss; a Parse or Bind that may begin a
// cacheable exchange is held. It reports whether the client has been
// answered (or the message held).
func (s *clientConn) cacheStart(typ byte, raw []byte) (bool, error) {
	switch typ {
	case wire.MsgQuery, wire.MsgParse, wire.MsgBind:
	default:
		return false, nil
	}
	status, ok := s.cacheQuiescent()
	if !ok {
		return false, nil
	}
	v, cp, ok := s.cacheUsable()
	if !ok {
		return false, nil
	}
	switch typ {
	case wire.MsgQuery:
		return s.cacheQuery(raw, status, v, cp), nil
	case wire.MsgParse:
		name, rest, ok := wire.CString(raw[wire.HeaderLen:])
		if !ok || len(name) > 0 && s.stmts[string(name)] != nil {
			return false, nil // PostgreSQL answers a reused name with 42P05
		}
		if _, _, ok := s.cachePlan(v, cp, s.verdict); !ok || s.textMentionsClock(rest) {
			return false, nil
		}
	case wire.MsgBind:
		if _, _, _, ok := s.bindTarget(raw, v, cp); !ok {
			return false, nil
		}
	}
	s.cache.status = status
	s.hold(typ, raw, s.verdict)
	return true, nil
}

// cacheQuery answers a simple Query from the cache, or arms its fill.
func (s *clientConn) cacheQuery(raw []byte, status byte, v *cacheView, cp *cachePolicy) bool {
	c := &s.cache
	text, _, ok := wire.CString(raw[wire.HeaderLen:])
	if !ok {
		return false
	}
	p, ttl, ok := s.cachePlan(v, cp, s.verdict)
	if !ok {
		return false
	}
	if firewall.MentionsCurrentTime(string(text)) {
		c.tc.m.skip("clock_literal")
		return false
	}
	key := s.cacheKey('Q', text, nil)
	h := c.rc.hash(key)
	if e := c.rc.lookup(c.tc, key, h, time.Now()); e != nil && e.rowDesc != nil {
		c.tc.hits.Add(1)
		c.tc.m.hits.Inc()
		s.writeCached(e.rowDesc, e.rows, e.tag, readyFor(status))
		return true
	}
	s.armFill(v, cp, p, key, h, ttl, status, false)
	return false
}

// armFill prepares the miss about to be sent to fill the cache.
func (s *clientConn) armFill(v *cacheView, cp *cachePolicy, p *stmtPlan, key []byte, h uint64, ttl time.Duration, status byte, extended bool) {
	c := &s.cache
	c.tc.misses.Add(1)
	c.tc.m.misses.Inc()
	if !c.rc.admitFill(h) {
		c.tc.m.firstMisses.Inc()
		return
	}
	f := newCacheFill(c.rc, c.tc, v, p, key, h)
	f.ttl, f.status, f.extended = ttl, status, extended
	f.budget = cp.rules.TenantBytes(s.t)
	f.maxBytes = cp.rules.MaxEntryBytes()
	c.fill = f
}

// hold keeps a copy of a message of the segment being held.
func (s *clientConn) hold(typ byte, raw []byte, v *firewall.Verdict) {
	c := &s.cache
	if len(c.held) == 0 {
		c.buf = c.buf[:0]
	}
	c.held = append(c.held, heldMsg{typ: typ, off: len(c.buf), n: len(raw), verdict: v})
	c.buf = append(c.buf, raw...)
}

func (c *clientCache) msg(i int) []byte { m := c.held[i]; return c.buf[m.off : m.off+m.n] }

// heldIndex returns the index of the held message of type typ, or -1.
func (c *clientCache) heldIndex(typ byte) int {
	for i, m := range c.held {
		if m.typ == typ {
			return i
		}
	}
	return -1
}

// cacheContinue handles a message while a segment is held: one that fits
// the shape is held too; a Sync is answered from the cache on a hit; on a
// miss, or anything else, what is held is sent, and the message goes on
// as usual (done false).
func (s *clientConn) cacheContinue(ctx context.Context, typ byte, raw []byte) (bool, error) {
	c := &s.cache
	body := raw[wire.HeaderLen:]
	hasBind, hasExec := c.heldIndex(wire.MsgBind) >= 0, c.heldIndex(wire.MsgExecute) >= 0
	switch {
	case typ == wire.MsgBind && !hasBind && c.heldIndex(wire.MsgParse) >= 0:
		// After a held Parse: it must bind that statement to the unnamed portal.
		parse := c.msg(c.heldIndex(wire.MsgParse))
		pname, _, _ := wire.CString(parse[wire.HeaderLen:])
		portal, rest, ok := wire.CString(body)
		stmt, _, ok2 := wire.CString(rest)
		if ok && ok2 && len(portal) == 0 && bytes.Equal(stmt, pname) {
			s.hold(typ, raw, nil)
			return true, nil
		}
	case typ == wire.MsgDescribe && hasBind && !hasExec && c.heldIndex(wire.MsgDescribe) < 0:
		if bytes.Equal(body, []byte{wire.TargetPortal, 0}) {
			s.hold(typ, raw, nil)
			return true, nil
		}
	case typ == wire.MsgExecute && hasBind && !hasExec:
		if len(body) == 5 && body[0] == 0 && binary.BigEndian.Uint32(body[1:]) == 0 {
			s.hold(typ, raw, nil)
			return true, nil
		}
	case typ == wire.MsgSync && hasExec:
		if s.cacheServeHeld() {
			return true, nil
		}
	}
	if err := s.replayHeld(ctx); err != nil {
		return true, err
	}
	if s.broken.Load() || s.abort.Load() {
		return true, s.terminate()
	}
	if s.skipUntilSync {
		// Sending what was held failed: the rest of the segment is skipped.
		if typ == wire.MsgSync {
			s.skipUntilSync = false
			s.writeReady(wire.TxIdle)
		}
		return true, nil
	}
	return false, nil
}

// cacheServeHeld answers the held segment, whose Sync has come, from the
// cache; on a miss it arms the fill for sending it. It reports whether it
// answered.
func (s *clientConn) cacheServeHeld() bool {
	c := &s.cache
	status, ok := s.cacheQuiescent()
	if !ok || status != c.status {
		return false
	}
	v, cp, ok := s.cacheUsable()
	if !ok {
		return false
	}
	pi, bi := c.heldIndex(wire.MsgParse), c.heldIndex(wire.MsgBind)
	var vd *firewall.Verdict
	var rest, tail []byte
	if pi >= 0 {
		// The Bind names the held Parse's statement (cacheContinue).
		_, r, _ := wire.CString(c.msg(pi)[wire.HeaderLen:])
		_, t, ok := bindTail(c.msg(bi))
		if !ok {
			return false
		}
		if bindMentionsClock(t) {
			c.tc.m.skip("clock_literal")
			return false
		}
		rest, vd, tail = r, c.held[pi].verdict, t
	} else {
		r, bvd, t, ok := s.bindTarget(c.msg(bi), v, cp)
		if !ok {
			return false
		}
		rest, vd, tail = r, bvd, t
	}
	p, ttl, ok := s.cachePlan(v, cp, vd)
	if !ok || !s.permits(vd.Class) {
		return false
	}
	key := s.cacheKey('E', rest, tail)
	h := c.rc.hash(key)
	described := c.heldIndex(wire.MsgDescribe) >= 0
	e := c.rc.lookup(c.tc, key, h, time.Now())
	if e == nil || described && e.rowDesc == nil {
		s.armFill(v, cp, p, key, h, ttl, status, true)
		return false
	}
	c.tc.hits.Add(1)
	c.tc.m.hits.Inc()
	if pi >= 0 {
		s.emulateParse(c.msg(pi), vd)
	}
	parts := make([][]byte, 0, len(c.held)+1)
	for _, m := range c.held {
		switch m.typ {
		case wire.MsgParse:
			parts = append(parts, parseComplete)
		case wire.MsgBind:
			parts = append(parts, bindComplete)
		case wire.MsgDescribe:
			parts = append(parts, e.rowDesc)
		case wire.MsgExecute:
			parts = append(parts, e.rows, e.tag)
		}
	}
	parts = append(parts, readyFor(status))
	c.held = c.held[:0]
	s.writeCached(parts...)
	return true
}

var (
	parseComplete = []byte{wire.MsgParseComplete, 0, 0, 0, 4}
	bindComplete  = []byte{wire.MsgBindComplete, 0, 0, 0, 4}
	readyIdle     = wire.AppendReadyForQuery(nil, wire.TxIdle)
	readyInBlock  = wire.AppendReadyForQuery(nil, wire.TxInBlock)
)

func readyFor(status byte) []byte {
	if status == wire.TxInBlock {
		return readyInBlock
	}
	return readyIdle
}

// bindTarget reads a Bind of a statement the client prepared earlier (not
// one held): it must bind the unnamed portal, to a statement whose results
// the client may cache, with no text parameter that reads as the clock. It
// returns the statement's text and parameter types (as in a Parse), its
// verdict and the Bind's parameters and result formats.
func (s *clientConn) bindTarget(raw []byte, v *cacheView, cp *cachePolicy) (stmtRest []byte, vd *firewall.Verdict, tail []byte, ok bool) {
	stmt, tail, ok := bindTail(raw)
	if !ok {
		return nil, nil, nil, false
	}
	var clock clockScan
	if len(stmt) == 0 {
		if s.unnamedParse == nil {
			return nil, nil, nil, false
		}
		stmtRest, vd = s.unnamedParse[wire.HeaderLen+1:], s.unnamedVerdict
		if s.cache.unnamedClockGen != s.unnamedGen {
			s.cache.unnamedClock, s.cache.unnamedClockGen = scanClock(stmtRest), s.unnamedGen
		}
		clock = s.cache.unnamedClock
	} else {
		st := s.stmts[string(stmt)]
		if st == nil {
			return nil, nil, nil, false
		}
		stmtRest, vd = st.parse[wire.HeaderLen+len(st.serverName)+1:], st.verdict
		if st.clock == clockUnknown {
			st.clock = scanClock(stmtRest)
		}
		clock = st.clock
	}
	if _, _, ok := s.cachePlan(v, cp, vd); !ok {
		return nil, nil, nil, false
	}
	if clock == clockYes || bindMentionsClock(tail) {
		s.cache.tc.m.skip("clock_literal")
		return nil, nil, nil, false
	}
	return stmtRest, vd, tail, true
}

// bindTail splits a Bind of the unnamed portal into its statement name and
// the rest (parameter formats, values, result formats).
func bindTail(raw []byte) (stmt, tail []byte, ok bool) {
	portal, rest, ok := wire.CString(raw[wire.HeaderLen:])
	if !ok || len(portal) > 0 {
		return nil, nil, false
	}
	stmt, tail, ok = wire.CString(rest)
	return stmt, tail, ok
}

// bindMentionsClock reports whether a Bind's text parameters may read as
// the clock, or the Bind cannot be read (then the server says what is
// wrong with it).
func bindMentionsClock(tail []byte) bool {
	rd := tail
	u16 := func() (int, bool) {
		if len(rd) < 2 {
			return 0, false
		}
		v := int(int16(binary.BigEndian.Uint16(rd)))
		rd = rd[2:]
		return v, v >= 0
	}
	nf, ok := u16()
	if !ok {
		return true
	}
	formats := make([]int, nf)
	for i := range formats {
		if formats[i], ok = u16(); !ok {
			return true
		}
	}
	np, ok := u16()
	if !ok || nf > 1 && nf != np {
		return true
	}
	for i := 0; i < np; i++ {
		if len(rd) < 4 {
			return true
		}
		n := int32(binary.BigEndian.Uint32(rd))
		rd = rd[4:]
		if n < 0 {
			continue // NULL
		}
		if int(n) > len(rd) {
			return true
		}
		f := 0
		switch nf {
		case 1:
			f = formats[0]
		case 0:
		default:
			f = formats[i]
		}
		if f == 0 && firewall.ValueMentionsCurrentTime(rd[:n]) {
			return true
		}
		rd = rd[n:]
	}
	nr, ok := u16()
	if !ok || len(rd) != 2*nr {
		return true
	}
	return false
}

// textMentionsClock reports whether a Parse's text mentions the clock.
func (s *clientConn) textMentionsClock(rest []byte) bool {
	if scanClock(rest) == clockYes {
		s.cache.tc.m.skip("clock_literal")
		return true
	}
	return false
}

func scanClock(rest []byte) clockScan {
	text, _, ok := wire.CString(rest)
	if !ok || firewall.MentionsCurrentTime(string(text)) {
		return clockYes
	}
	return clockNo
}

// emulateParse records a Parse the cache answered as the server would
// have: the client's statement now exists, and is prepared upstream when
// the client needs it there.
func (s *clientConn) emulateParse(raw []byte, vd *firewall.Verdict) {
	name, rest, _ := wire.CString(raw[wire.HeaderLen:])
	if len(name) == 0 {
		s.unnamedParse = append(s.unnamedParse[:0], raw...)
		s.unnamedClass, s.unnamedVerdict = vd.Class, vd
		s.unnamedGen++
		return
	}
	if s.stmts == nil {
		s.stmts = map[string]*clientStmt{}
	}
	s.stmts[string(name)] = newClientStmt(rest, vd.SessionState, vd)
}

// replayHeld sends what was held, as it would have gone, in one write.
func (s *clientConn) replayHeld(ctx context.Context) error {
	c := &s.cache
	held := c.held
	c.held = c.held[:0]
	c.replaying = true
	defer func() { c.replaying = false }()
	for _, m := range held {
		raw := c.buf[m.off : m.off+m.n]
		if s.skipUntilSync {
			continue
		}
		if m.typ == wire.MsgBind {
			// Screened now: a Parse held before it is registered only now.
			if rule, refused := s.screenBind(raw); refused != nil {
				if s.lease != nil {
					s.lease.Record(0, rule)
				}
				if err := s.refuseStatement(m.typ, refused); err != nil {
					return err
				}
				continue
			}
		}
		s.verdict = m.verdict
		if err := s.forward(ctx, m.typ, raw); err != nil {
			return err
		}
	}
	// Not flushed yet: the message that made us send them comes next, and
	// always reaches the server now that a request is outstanding there
	// (the cache does not answer while one is), so its write flushes all.
	return nil
}

// cacheKey builds the key of a statement of the client in its scratch
// buffer: tenant, kind ('Q' simple, 'E' extended), the statement (text, or
// a Parse body after its name), the Bind's parameters and result formats,
// and the settings that change results.
func (s *clientConn) cacheKey(kind byte, stmt, bind []byte) []byte {
	k := append(s.cache.key[:0], s.tenant...)
	k = append(k, 0, kind)
	k = appendLenPrefixed(k, stmt)
	k = appendLenPrefixed(k, bind)
	s.pmu.Lock()
	for _, i := range cacheKeyParams {
		v, set := s.params.get(i)
		if !set {
			k = append(k, 0)
			continue
		}
		k = append(k, 1)
		k = appendLenPrefixed(k, []byte(v))
	}
	s.pmu.Unlock()
	s.cache.key = k
	return k
}

func appendLenPrefixed(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// writeCached writes a cached answer to the client.
func (s *clientConn) writeCached(parts ...[]byte) {
	s.lastRequest.Store(time.Now().UnixNano())
	s.wmu.Lock()
	if s.ended {
		s.wmu.Unlock()
		return
	}
	// Bounded as writeFromServer's batches are: a client that does not
	// read its cached answers is disconnected, not waited for.
	if !s.wdlSet {
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.ClientWriteTimeout))
	}
	var err error
	for _, p := range parts {
		if _, err = s.bw.Write(p); err != nil {
			break
		}
	}
	if err == nil {
		err = s.bw.Flush()
		if err == nil && !s.wdlSet {
			_ = s.conn.SetWriteDeadline(time.Time{})
		}
	}
	s.wmu.Unlock()
	if err != nil {
		_ = s.conn.Close() // the client goroutine sees it and cleans up
	}
}

// cacheNoteSend notes what a message about to be sent does to the cache:
// the tables it writes (invalidated when its transaction ends), session
// state the key does not cover, and transactions begun READ ONLY.
func (s *clientConn) cacheNoteSend(typ byte, raw []byte) {
	var vd *firewall.Verdict
	switch typ {
	case wire.MsgQuery:
		vd = s.verdict
	case wire.MsgBind:
		_, rest, ok := wire.CString(raw[wire.HeaderLen:])
		stmt, _, ok2 := wire.CString(rest)
		if !ok || !ok2 {
			return
		}
		if len(stmt) == 0 {
			vd = s.unnamedVerdict
		} else if st := s.stmts[string(stmt)]; st != nil {
			vd = st.verdict
		}
	default:
		return
	}
	if vd == nil || vd.Cache == nil {
		return
	}
	ci, c := vd.Cache, &s.cache
	for _, name := range ci.Settings {
		switch {
		case harmlessSettings[name] || strings.HasPrefix(name, "enable_"):
		case ci.SettingsLocal:
			c.taintTx.Store(true)
		default:
			c.taintConn.Store(true)
		}
	}
	if ci.DDL {
		c.taintConn.Store(true)
	}
	if ci.Begin {
		// Without cache rules, a transaction is never answered from the
		// cache: no need to read the session's defaults.
		c.readOnlyTx.Store(s.snap.PgCache().Enabled() && s.beginsReadCommittedReadOnly(ci))
	}
	if len(ci.Writes) == 0 && !ci.WritesUnknown && len(ci.Functions) == 0 {
		return
	}
	if c.rc == nil && !c.enabled(s) {
		return
	}
	v := c.rc.view.Load()
	if v == nil {
		return // nothing is cached
	}
	cp, _ := v.policyFor(s.snap)
	p := cp.plan(v, vd)
	if len(p.writes) == 0 && !p.barrier && !p.flush {
		return
	}
	c.pmu.Lock()
	c.pending.rc = c.rc
	for _, t := range p.writes {
		if name := v.tables[t].name; !slices.Contains(c.pending.tables, name) {
			c.pending.tables = append(c.pending.tables, name)
		}
	}
	c.pending.barrier = c.pending.barrier || p.barrier
	c.pending.flush = c.pending.flush || p.flush
	c.hasPending.Store(true)
	c.pmu.Unlock()
}

// beginsReadCommittedReadOnly reports whether a BEGIN starts a READ ONLY
// transaction at READ COMMITTED, by its options or the session's defaults.
func (s *clientConn) beginsReadCommittedReadOnly(ci *firewall.CacheInfo) bool {
	readOnly, iso := ci.BeginReadOnly == 1, ci.BeginIsolation
	s.pmu.Lock()
	if ci.BeginReadOnly == 0 {
		if v, set := s.params.get(trackedIndex("default_transaction_read_only")); set {
			readOnly = checkBool(v) == nil && isTrue(v)
		}
	}
	if iso == "" {
		if v, set := s.params.get(trackedIndex("default_transaction_isolation")); set {
			iso = strings.ToLower(v)
		}
	}
	s.pmu.Unlock()
	if iso == "" && s.cache.rc != nil {
		if v := s.cache.rc.view.Load(); v != nil {
			iso = v.isolation
		}
	}
	return readOnly && iso == "read committed"
}

// isTrue reads a boolean setting as PostgreSQL's parse_bool does.
func isTrue(v string) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	return v == "on" || v == "1" || len(v) > 0 && (strings.HasPrefix("true", v) || strings.HasPrefix("yes", v))
}

// commitWrites applies the client's noted writes when its transaction has
// ended (with nothing more owed: all its statements are done, so it
// forgets them). Called by the read loop with the server connection's mu
// held. It returns the cache whose barrier must be waited for.
func (c *clientCache) commitWrites(tenant string, done bool) *resultCache {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	pw := c.pending
	if pw.rc == nil {
		return nil
	}
	if done {
		c.pending = pendingWrites{tables: c.pending.tables[:0]}
		c.hasPending.Store(false)
	}
	rc := pw.rc
	if pw.flush {
		rc.flush("unknown_write")
	}
	if v := rc.view.Load(); v != nil {
		cp := v.pol.Load()
		for _, name := range pw.tables {
			t, ok := v.byName[name]
			if !ok {
				continue
			}
			rc.metrics.notified.WithLabelValues(rc.pool.key, "local").Inc()
			rc.invalidate(v, t, tenant, cp != nil && t < len(cp.isolated) && cp.isolated[t])
		}
	}
	if pw.barrier {
		return rc
	}
	return nil
}

// cacheFinish applies the writes of a client that is going (or whose
// server connection died): its last transaction may have committed.
func (s *clientConn) cacheFinish() {
	if s.cache.hasPending.Load() {
		s.cache.commitWrites(s.tenant, true)
	}
}
