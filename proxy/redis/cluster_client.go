package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/tenantguard/tenantguard/proxy/redis/clustermap"
	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// A client's side of a Redis Cluster upstream (cluster.go).

// noSlot is plan.slot of a command without keys.
const noSlot = -1

// clusterSlot returns the slot of the keys of out (a rewritten command),
// noSlot when it has none, or false when they hash to different slots:
// redis-server's CROSSSLOT, which in one-slot mode no tenant can reach
// (all its keys share one hash tag).
func (s *clientConn) clusterSlot(cmd *keyspec.Command, out [][]byte) (int32, bool) {
	switch cmd.Name {
	case "spublish", "ssubscribe", "sunsubscribe":
		// Shard channels are not keys to the key specs (NOT_KEY), but
		// hash to slots as keys do: all of them after the name.
		if len(out) < 2 {
			return noSlot, true
		}
		slot := clustermap.KeySlot(out[1])
		last := len(out)
		if cmd.Name == "spublish" {
			last = 2
		}
		for _, ch := range out[2:last] {
			if clustermap.KeySlot(ch) != slot {
				return noSlot, false
			}
		}
		return int32(slot), true
	}
	idx, err := cmd.AppendKeyIndexes(s.slotKeys[:0], out)
	s.slotKeys = idx[:0]
	if err != nil || len(idx) == 0 {
		return noSlot, true
	}
	slot := clustermap.KeySlot(out[idx[0]])
	for _, i := range idx[1:] {
		if clustermap.KeySlot(out[i]) != slot {
			return noSlot, false
		}
	}
	return int32(slot), true
}

// refusedOnCluster says why a cluster upstream cannot do rp per tenant
// ("" when it can; see the README): CLIENT TRACKING. The sidecar gives a tracking client
// its own connection to one master, in BCAST mode with the tenant's
// prefix, and that master only tells of its own slots' keys: a client
// whose keys live on other masters would keep stale entries, never told
// of their changes. Following every master would take a tracking
// connection to each and merging their invalidations into the client's
// stream, which is not built.
func refusedOnCluster(rp rules.Plan) string {
	switch rp {
	case rules.ReplyTracking, rules.ReplyTrackingState:
		return "client-side caching is not available with a Redis Cluster upstream: a master only sends invalidations for keys of its own slots, so a cache of other masters' keys would go stale"
	}
	return ""
}

// clusterTarget returns the connection that serves the client's next
// command on a cluster: its shared connection to the master of p's slot,
// or its own connection to that master when the command needs state.
// Keyless commands stay on the client's current connection.
func (s *clientConn) clusterTarget(ctx context.Context, p plan) (*upConn, error) {
	c := s.be.cluster
	addr := ""
	if p.slot != noSlot || s.up == nil {
		slot := uint16(p.slot)
		if p.slot == noSlot {
			slot = clustermap.KeySlot([]byte(s.ns.KeyPrefix()))
		}
		a, err := c.masterFor(ctx, slot)
		if err != nil {
			return nil, err
		}
		addr = a
	}
	if s.dedicated {
		if addr == "" || addr == s.up.addr || s.holdsState() {
			// A key on another node inside MULTI, or while subscribed:
			// that node answers MOVED, and the client -TRYAGAIN.
			return s.up, nil
		}
		// Nothing lives on the connection: move it to the key's node.
		s.waitDrained()
		s.be.releaseDedicated(s.up)
		s.up, s.dedicated, s.via = nil, false, nil
	}
	if p.dedicated || s.resp3 {
		if addr == "" {
			addr = s.up.addr
		}
		if s.up != nil {
			if err := s.up.flush(); err != nil {
				return nil, err
			}
		}
		s.waitDrained()
		u, err := s.be.dedicatedConn(ctx, s, addr)
		if err != nil {
			return nil, err
		}
		s.up, s.dedicated, s.via = u, true, u
		return u, nil
	}
	if addr == "" {
		return s.up, nil
	}
	u, err := c.sharedConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	s.up = u
	return u, nil
}

// holdsState reports whether the client's dedicated connection holds
// state a move to another node would lose.
func (s *clientConn) holdsState() bool {
	return s.inMulti || s.watching || subscribedAny(s.subs)
}

// clusterServe answers, on a cluster upstream, what one node cannot:
// KEYS and SCAN over every master, SCRIPT LOAD on every master,
// FLUSHDB/FLUSHALL/DBSIZE emulated on every master, and the refusals of
// refusedOnCluster. It reports whether
// it answered.
func (s *clientConn) clusterServe(ctx context.Context, cmd *keyspec.Command, out [][]byte, p plan, rp rules.Plan) (rule string, done bool) {
	if what := refusedOnCluster(rp); what != "" {
		s.refuse(cmd.Name, what, "cluster-upstream")
		return "cluster-upstream", true
	}
	switch {
	case rp == rules.ReplyScriptLoad:
		s.clusterScriptLoad(ctx, out, p.sha)
		return "", true
	case rp == rules.ReplyStripKeys && cmd.Name == "keys":
		s.clusterKeys(ctx, out)
		return "", true
	case rp == rules.ReplyStripScan && cmd.Name == "scan":
		s.clusterScan(ctx, out)
		return "", true
	}
	return "", false
}

// clusterKeys answers KEYS with the tenant's matching keys of every master.
func (s *clientConn) clusterKeys(ctx context.Context, out [][]byte) {
	s.waitDrained()
	masters, err := s.be.cluster.masters(ctx)
	if err != nil {
		s.writeLocal(s.dialFailure(err))
		return
	}
	var keys [][]byte
	for _, addr := range masters {
		err := s.be.cluster.roundTrip(ctx, addr, func(u *upConn) error {
			rep, err := u.call(out)
			if err != nil {
				return err
			}
			root := rep.Root()
			if root.Type() == resp.TypeSimpleError {
				return errString("KEYS: " + string(root.Bytes()))
			}
			for it := root.Iter(); it.Next(); {
				if k, ok := s.ns.StripKey(it.Value().Bytes()); ok {
					keys = append(keys, append([]byte(nil), k...))
				}
			}
			return nil
		})
		if err != nil {
			s.writeLocal(s.upstreamFailure(msgEmulationFailed, err))
			return
		}
	}
	b := resp.AppendArrayHeader(nil, len(keys))
	for _, k := range keys {
		b = resp.AppendBulk(b, k)
	}
	s.writeLocal(b)
}

// clusterScriptLoad answers SCRIPT LOAD by loading the tenant's form of
// the script (out, rewritten by prepareScript, which recorded its SHA1)
// on every master, so that an EVALSHA finds it whichever master its keys
// hash to. redis-py's Lock, say, loads its scripts once and then runs
// them by SHA1 on keys of any slot. Loading runs nothing: the script runs
// later, by EVALSHA on the tenant's script connection, as the tenant's
// user. A master that joins later, or a replica promoted, answers
// NOSCRIPT until the client loads or EVALs the script again, as
// redis-server would after a restart.
func (s *clientConn) clusterScriptLoad(ctx context.Context, out [][]byte, client [20]byte) {
	s.waitDrained()
	sha := scriptSHA(out[2])
	fail := func(b []byte) {
		s.be.scripts.forget(s.tenantID, client)
		s.writeLocal(b)
	}
	masters, err := s.be.cluster.masters(ctx)
	if err != nil {
		fail(s.dialFailure(err))
		return
	}
	for _, addr := range masters {
		var replyErr []byte
		err := s.be.cluster.roundTrip(ctx, addr, func(u *upConn) error {
			rep, err := u.call(out)
			if err != nil {
				return err
			}
			if t := rep.Root().Type(); t == resp.TypeSimpleError || t == resp.TypeBlobError {
				replyErr = append([]byte(nil), rep.Raw()...)
			} else if string(rep.Root().Bytes()) != hex.EncodeToString(sha[:]) {
				return errors.New("SCRIPT LOAD answered another SHA1")
			}
			return nil
		})
		if err != nil {
			fail(s.upstreamFailure(msgEmulationFailed, err))
			return
		}
		if replyErr != nil {
			fail(replyErr) // a compile error: redis-server's own words
			return
		}
	}
	s.writeLocal(resp.AppendBulk(nil, hex.AppendEncode(nil, client[:])))
}

// scanNodeBits is how many low bits of a client's SCAN cursor number the
// master (in sorted order) the scan is on; the rest is that master's own
// cursor. A cluster of more masters than that is refused by SCAN.
const scanNodeBits = 10

// clusterScan answers SCAN by scanning the masters one after another: the
// cursor the client gets encodes the master and that master's cursor.
// Like SCAN on one server it may return a key twice; a master added or
// removed during the scan can make it miss keys that stayed.
func (s *clientConn) clusterScan(ctx context.Context, out [][]byte) {
	s.waitDrained()
	masters, err := s.be.cluster.masters(ctx)
	if err != nil {
		s.writeLocal(s.dialFailure(err))
		return
	}
	cur, err := strconv.ParseUint(string(out[1]), 10, 64)
	if err != nil {
		s.writeLocal(resp.AppendError(nil, "ERR invalid cursor"))
		return
	}
	if len(masters) > 1<<scanNodeBits {
		s.writeLocal(resp.AppendError(nil, "ERR tenantguard: SCAN over more than 1024 masters"))
		return
	}
	node, nodeCur := int(cur&(1<<scanNodeBits-1)), cur>>scanNodeBits
	if node >= len(masters) {
		s.writeLocal(resp.AppendError(nil, "ERR invalid cursor"))
		return
	}
	args := append([][]byte(nil), out...)
	args[1] = strconv.AppendUint(nil, nodeCur, 10)
	var next uint64
	var keys [][]byte
	err = s.be.cluster.roundTrip(ctx, masters[node], func(u *upConn) error {
		rep, err := u.call(args)
		if err != nil {
			return err
		}
		root := rep.Root()
		if root.Type() == resp.TypeSimpleError {
			return errString("SCAN: " + string(root.Bytes()))
		}
		if root.Len() != 2 {
			return errString("unexpected SCAN reply")
		}
		n, err := strconv.ParseUint(string(root.Index(0).Bytes()), 10, 64)
		if err != nil || n >= 1<<(64-scanNodeBits) {
			return errors.New("SCAN cursor out of range")
		}
		switch {
		case n != 0:
			next = n<<scanNodeBits | uint64(node)
		case node+1 < len(masters):
			next = uint64(node + 1)
		}
		for it := root.Index(1).Iter(); it.Next(); {
			if k, ok := s.ns.StripKey(it.Value().Bytes()); ok {
				keys = append(keys, append([]byte(nil), k...))
			}
		}
		return nil
	})
	if err != nil {
		s.writeLocal(s.upstreamFailure(msgEmulationFailed, err))
		return
	}
	b := resp.AppendArrayHeader(nil, 2)
	b = resp.AppendBulk(b, strconv.AppendUint(nil, next, 10))
	b = resp.AppendArrayHeader(b, len(keys))
	for _, k := range keys {
		b = resp.AppendBulk(b, k)
	}
	s.writeLocal(b)
}

// clusterScanTenant is scanTenant on every master.
func (s *clientConn) clusterScanTenant(ctx context.Context, unlink bool) (int64, error) {
	masters, err := s.be.cluster.masters(ctx)
	if err != nil {
		return 0, dialError{err}
	}
	var total int64
	for _, addr := range masters {
		u, err := s.be.cluster.dial(ctx, addr, false)
		if err != nil {
			return total, dialError{err}
		}
		n, err := s.scanTenantOn(u, unlink)
		u.closeNoReader()
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Transactions in spread mode.
//
// In spread mode a tenant's keys live on every master, so the node a
// transaction must run on is known only from its first queued command
// with keys. MULTI is therefore held: answered +OK at once, and sent,
// with its reply dropped, on the client's own connection to the node of
// the first command queued after it. EXEC or DISCARD with nothing queued
// is answered without a connection. A transaction whose later commands
// hash to another node gets, as from redis-server, an error for that
// command and EXECABORT for EXEC (on another node: -TRYAGAIN, as any
// MOVED on a connection that holds state); one over several slots of one
// node gets redis-server's CROSSSLOT. After WATCH the transaction runs on
// the watched key's node, and in one-slot mode on the tenant's, so MULTI
// is not held then.

// clusterMulti holds, answers or sends a held MULTI; it reports whether
// it answered the command (cmd, with plan p) itself.
func (s *clientConn) clusterMulti(ctx context.Context, cmd []byte, p plan) bool {
	switch {
	case p.multi && s.heldMulti == nil && !s.holdsState() && s.ns.Mode() == namespace.Spread:
		s.heldMulti = append([]byte(nil), cmd...)
		s.queued = s.queued[:0]
		s.qmu.Lock()
		s.inMulti = true
		s.qmu.Unlock()
		s.writeLocal(resp.AppendSimple(nil, "OK"))
		return true
	case s.heldMulti == nil:
		return false
	case p.reply == rules.ReplyExec || p.discard:
		// Nothing was queued: an empty transaction.
		s.heldMulti = nil
		s.qmu.Lock()
		s.inMulti = false
		s.qmu.Unlock()
		s.watching = false
		if p.discard {
			s.writeLocal(resp.AppendSimple(nil, "OK"))
		} else {
			s.writeLocal(resp.AppendArrayHeader(nil, 0))
		}
		return true
	case p.multi:
		s.writeLocal(resp.AppendError(nil, "ERR MULTI calls can not be nested"))
		return true
	}
	// The first command queued: MULTI goes to its node, first.
	multi := s.heldMulti
	s.heldMulti = nil
	own := p
	own.dedicated = true
	s.qmu.Lock()
	s.inMulti = false // while the connection is chosen: no state yet
	s.qmu.Unlock()
	u, err := s.clusterTarget(ctx, own)
	if err != nil {
		s.writeLocal(s.dialFailure(err))
		return true
	}
	s.qmu.Lock()
	s.inMulti = true
	s.outq.push(slot{plan: plan{drop: true}, start: time.Now(), cl: &clusterSlot{cmd: multi, via: u}})
	s.qmu.Unlock()
	s.markDirty(u)
	if err := u.send(s, multi, 1); err != nil {
		s.dropSlots(1)
		s.qmu.Lock()
		s.inMulti = false
		s.qmu.Unlock()
		s.writeLocal(s.upstreamFailure(msgLostBeforeSend, err))
		return true
	}
	return false
}

// Replies from several nodes.
//
// A client's commands go to the masters of their keys without waiting for
// the replies owed on other masters: a pipeline is split per node, and
// the replies are put back in the client's order. Each owed reply's slot
// carries a clusterSlot naming the connection it was sent on; a reply read
// on a connection answers the oldest slot still open for that connection
// (replies come back in order per connection), is rewritten into the
// slot, and the client is sent every finished slot at the front.

// clusterSlot is the cluster upstream's part of an owed reply.
type clusterSlot struct {
	cmd   []byte  // the command sent (replayed after MOVED or ASK)
	via   *upConn // the connection it was sent on
	done  bool
	reply []byte // the rewritten reply, until the slots before it are done
}

// markDirty notes that u has commands of the client to flush.
func (s *clientConn) markDirty(u *upConn) {
	for _, d := range s.dirty {
		if d == u {
			return
		}
	}
	s.dirty = append(s.dirty, u)
}

// flushDirty flushes every connection the client wrote to.
func (s *clientConn) flushDirty() {
	for i, u := range s.dirty {
		_ = u.flush() // a failed write fails what is owed on u
		s.dirty[i] = nil
	}
	s.dirty = s.dirty[:0]
}

// owedOn returns the oldest open slot of the client sent on u, or nil.
func (s *clientConn) owedOn(u *upConn) *clusterSlot {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.owedOnLocked(u)
}

func (s *clientConn) owedOnLocked(u *upConn) *clusterSlot {
	for i := range s.outq.len() {
		if cl := s.outq.at(i).cl; cl != nil && !cl.done && cl.via == u {
			return cl
		}
	}
	return nil
}

// completeFor answers the oldest slot open on u with rep, or with the
// error msg when rep is nil.
func (s *clientConn) completeFor(u *upConn, rep *resp.Reply, msg string) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if cl := s.owedOnLocked(u); cl != nil {
		s.completeLocked(cl, rep, msg)
	}
}

// complete answers cl with rep, or with the error msg when rep is nil.
func (s *clientConn) complete(cl *clusterSlot, rep *resp.Reply, msg string) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.completeLocked(cl, rep, msg)
}

func (s *clientConn) completeLocked(cl *clusterSlot, rep *resp.Reply, msg string) {
	var sl *slot
	for i := range s.outq.len() {
		if x := s.outq.at(i); x.cl == cl {
			sl = x
			break
		}
	}
	if sl == nil || cl.done {
		return // the client gave up on it (closed); drop
	}
	cl.done = true
	switch {
	case sl.plan.drop:
		// A held MULTI's +OK, answered when it was held.
	case rep == nil:
		cl.reply = resp.AppendError(nil, msg)
	default:
		s.latency.Observe(time.Since(sl.start).Seconds())
		cl.reply = s.transform(nil, rep, *sl)
	}
	for s.outq.len() > 0 {
		f := s.outq.front()
		switch {
		case f.local != nil:
			s.appendOut(f.local)
		case f.cl != nil && f.cl.done:
			if f.cl.reply != nil && s.reserve(len(f.cl.reply)) {
				s.out = append(s.out, f.cl.reply...)
			}
		default:
			return
		}
		s.popSlot()
		if s.outq.len() == 0 {
			s.cond.Broadcast()
		}
	}
}
