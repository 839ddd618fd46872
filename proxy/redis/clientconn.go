package redis

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// slot is one reply the client is owed, in order: from upstream (local ==
// nil) or the proxy's own.
type slot struct {
	local []byte
	plan  plan
	start time.Time
	multi []plan       // for EXEC: the plans of the queued commands
	cl    *clusterSlot // on a cluster upstream: where it went, and its reply once read
}

// clientConn is one client connection.
type clientConn struct {
	srv *Server // the listener
	// be serves the client's commands: the listener for the configured
	// upstream, or the backend of the upstream its tenant is placed on
	// (placement.go). route names it (written under qmu, read by
	// Reconcile); routeSnap is the snapshot route was last checked
	// against. Only the client goroutine writes them.
	be        *Server
	route     routeKey
	routeSnap *policy.Snapshot

	conn net.Conn
	rd   *resp.Reader
	id   int64
	name []byte

	// tenant is the tenant's policy as of the current command: re-read
	// whenever the Store holds a new snapshot (followPolicy). Only the
	// client goroutine uses it; other goroutines use tenantID.
	tenant   *policy.Tenant
	snap     *policy.Snapshot // the snapshot tenant was read from
	tenantID string           // set once, under srv.mu, when the client is bound
	label    string
	ns       *namespace.Namespace
	resp3    bool

	rw        *rules.Rewriter
	rwPol     *rules.Policy // the srv.rulesPolicy rw was built with
	cmdBuf    []byte
	up        *upConn // shared, or dedicated once stateful
	dedicated bool
	// via is the connection the client's last forwarded command went to:
	// up, or the tenant's script connection (scripts.go). A command for
	// another connection first waits for every reply owed.
	via        *upConn
	scriptArgs [][]byte // EVALSHA's arguments with the server's SHA1
	shaHex     []byte
	cache      *tenantCache   // the tenant's near cache, nil if none (nearcache.go)
	keyIdx     []int          // scratch: key positions of the command (near cache)
	nsKey      []byte         // scratch: a namespaced key (near cache)
	track      tracking       // CLIENT TRACKING as the client asked for it (tracking.go)
	queued     []plan         // plans of commands queued in MULTI
	inMulti    bool           // written under qmu (end reads it); the client goroutine reads it freely
	subs       map[string]int // subscriptions by kind (subKind): "channel", "pattern", "shard"
	watching   bool           // WATCH sent, no EXEC/DISCARD/UNWATCH since (cluster: keeps the node)
	heldMulti  []byte         // cluster, spread mode: MULTI answered, not yet sent (cluster_client.go)
	dirty      []*upConn      // cluster: connections written to since the last flush
	slotKeys   []int          // scratch for clusterSlot
	clusterOut [][]byte       // cluster upstream: the last command's rewritten arguments

	qmu      sync.Mutex // guards outq, the output (see output.go), ending, and writes to inMulti and pubsub
	cond     *sync.Cond // signalled when outq empties or the output is written
	outq     fifo[slot]
	out      []byte   // replies not yet written to the client (while draining: the last chunk)
	backlog  [][]byte // while draining: older chunks, in order
	backlogN int      // bytes in backlog
	inflight int      // bytes of the backlog the drainer is writing now
	draining bool     // a drainer goroutine owns writes to the client
	cut      bool     // disconnected for not reading its replies
	owedWait bool     // the client waits for outq to shrink (waitOwedBelow)
	sock     *sock    // nil: net.Conn only (the drainer writes, no loop)
	pubsub   bool     // subscribed to something
	ending   bool     // the token session ended, or the proxy drains: close at the next boundary (endMode: or now)
	endMode  policy.SessionEndMode
	endTimer *time.Timer // closes it if the boundary takes longer than SessionEndGrace
	finished bool        // finish ran: no end timer is started any more
	quitting bool        // QUIT: close once every reply is written

	// lease, when the client authenticated with a session token, is its
	// hold on the session; link routes the lease's end here.
	lease      policy.SessionLease
	link       *clientend.Link
	endPending atomic.Bool // ending, for the per-command check without qmu
	removed    atomic.Bool // closed because its tenant or credential left the policy
	// credential is the StoredKey of the static secret the connection last
	// authenticated with; nil (or a nil pointer) after a token. Written by
	// the client goroutine, read by Reconcile.
	credential atomic.Pointer[[]byte]
	gone       atomic.Bool // cut, as read without qmu

	args [][]byte

	// Served by the loop (fastpath.go): crd is what rd reads from, wake
	// where the loop hands the client back; loopSlot places it in the
	// loop's table. loopDirty is the loop's alone.
	crd       clientReader
	wake      chan handoff
	loopSlot  int32
	loopDirty bool

	rate    *bucket     // the tenant's command bucket, shared by its sessions
	load    *tenantLoad // the tenant's traffic, shared by its sessions (lane.go)
	cmds    prometheus.Counter
	latency prometheus.Observer
}

var (
	errQuit      = errors.New("client quit")
	errClientCut = errors.New("client disconnected for not reading its replies")
)

// run serves the client until it leaves: itself, or through the loop
// whenever it may (see fastpath.go).
func (s *clientConn) run(ctx context.Context) error {
	defer s.finish()
	_ = s.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.AuthTimeout))
	s.rd.SetLimits(resp.PreAuthLimits())
	for {
		var args [][]byte
		if s.rd.Buffered() == 0 {
			s.flushUpstream()
			s.flushClient()
			if s.joinLoop() {
				h := <-s.wake
				if h.err != nil {
					return s.readFailed(h.err)
				}
				args = h.args
			}
		}
		if args == nil {
			cmd, err := s.rd.ReadCommand()
			if err != nil {
				return s.readFailed(err)
			}
			if len(cmd.Args) == 0 {
				continue
			}
			args = cmd.Args
		}
		if err := s.handle(ctx, args, false); err != nil {
			if errors.Is(err, errQuit) {
				return nil
			}
			return err
		}
		if s.gone.Load() {
			return errClientCut // its pipelined commands are not run
		}
	}
}

// readFailed ends the client on a read error; a client that broke the
// protocol is told how, as redis-server tells it.
func (s *clientConn) readFailed(err error) error {
	var pe *resp.ProtocolError
	if errors.As(err, &pe) {
		s.writeLocal(pe.AppendReply(nil))
		s.flushClient()
	}
	return err
}

// quit answers QUIT as redis-server does: every reply owed for the
// commands before it, then +OK, then the connection closes. Nothing the
// client sends after QUIT runs; its input is read (and dropped) only to
// see it leave, so a client that goes while replies are still owed (say,
// to a blocking command) ends the client.
func (s *clientConn) quit() error {
	s.writeLocal(resp.AppendSimple(nil, "OK"))
	s.flushUpstream()
	s.qmu.Lock()
	s.quitting = true
	s.flushLocked()
	s.closeIfDoneLocked()
	s.qmu.Unlock()
	for {
		// Ends when the connection is closed after the last reply, or
		// when the client leaves first.
		if _, err := s.rd.ReadCommand(); err != nil {
			var pe *resp.ProtocolError
			if errors.As(err, &pe) || errors.Is(err, resp.ErrQueryTooLarge) {
				s.waitFlushed()
			}
			return errQuit
		}
	}
}

// flushUpstream sends the commands buffered for the upstream: now on a
// dedicated connection, soon (coalesced with other clients') on a shared one.
func (s *clientConn) flushUpstream() {
	if s.via != nil && s.via != s.up {
		_ = s.via.flush() // the near cache's fill connection
	}
	if len(s.dirty) > 0 {
		s.flushDirty()
	}
	if s.up == nil {
		return
	}
	// A failed write closes the connection: its read loop fails every
	// reply owed, each with an error.
	_ = s.up.flush()
}

// handle serves one command.
//
// On the loop (onLoop) it runs only what cannot wait, and answers
// errNeedHome, having run nothing, for the rest (see fastpath.go).
func (s *clientConn) handle(ctx context.Context, args [][]byte, onLoop bool) error {
	var nb [16]byte
	name := lowerName(nb[:0], args[0])
	if s.tenant == nil {
		if onLoop {
			return errNeedHome
		}
		return s.preAuth(string(name), args)
	}
	if snap := s.srv.policy.Load(); snap != s.snap && !s.followPolicy(snap) {
		return errSessionEnded
	}
	if s.routeStale() {
		if onLoop {
			return errNeedHome // moving may wait for replies
		}
		if err := s.followPlacement(ctx); err != nil {
			return err
		}
	}
	if s.endPending.Load() {
		if onLoop {
			return errNeedHome
		}
		if s.stopForEnd() {
			return errSessionEnded
		}
	}
	cmd, lerr := keyspec.Lookup(args)
	if onLoop && s.cache != nil && s.touchesCacheable(cmd, args) {
		// A hit is answered on the loop; anything else on a cacheable key
		// may dial or wait.
		if !s.loopHit(cmd, args, lerr) {
			return errNeedHome
		}
		if s.lease != nil {
			s.lease.Record(commandFingerprint(args[0]), "")
		}
		return nil
	}
	if onLoop && s.needsHome(name, cmd) {
		return errNeedHome
	}
	fp := commandFingerprint(args[0])
	rule, err := s.serve(ctx, name, args, cmd, lerr)
	if s.lease != nil && err != errSessionEnded {
		s.lease.Record(fp, rule)
	}
	return err
}

// serve runs one command of an authenticated client. It returns the rule
// that refused the command with NOPERM, if one did.
func (s *clientConn) serve(ctx context.Context, name []byte, args [][]byte, cmd *keyspec.Command, lerr error) (string, error) {
	switch string(name) {
	case "auth":
		return "", s.reauth(args)
	case "hello":
		return "", s.hello(args)
	case "quit":
		return "", s.quit()
	case "reset":
		return "", s.reset(ctx)
	case "client":
		if s.clientCommand(args) {
			return "", nil
		}
	}
	s.cmds.Inc()
	if rate := s.tenant.Limits.CommandsPerSecond; rate > 0 && !s.rate.take(time.Now(), rate) {
		s.srv.metrics.refusals.WithLabelValues(s.label, "rate-limit").Inc()
		s.writeLocal(resp.AppendError(nil, "TRYAGAIN tenantguard: tenant "+s.tenant.ID+" is over its command rate of "+strconv.Itoa(rate)+"/s"))
		return "", nil
	}
	out, p, rp, rerr := s.prepare(args, cmd, lerr)
	if rerr == nil && s.be.cluster != nil {
		if rule, done := s.clusterServe(ctx, cmd, s.clusterOut, p, rp); done {
			return rule, nil
		}
	}
	if rerr != nil {
		s.srv.metrics.refusals.WithLabelValues(s.label, rerr.rule).Inc()
		s.writeLocal(resp.AppendError(nil, rerr.msg))
		if rerr.noperm {
			return rerr.rule, nil
		}
		return "", nil
	}
	switch rp {
	case rules.ReplyLocalOK:
		s.writeLocal(resp.AppendSimple(nil, "OK"))
		return "", nil
	case rules.ReplyEmulateFlush:
		return "", s.emulateFlush(ctx, args)
	case rules.ReplyEmulateDBSize:
		return "", s.emulateDBSize(ctx)
	case rules.ReplyScriptExists:
		s.scriptExists(args)
		return "", nil
	case rules.ReplyScriptFlush:
		s.be.scripts.flush(s.tenantID)
		s.writeLocal(resp.AppendSimple(nil, "OK"))
		return "", nil
	case rules.ReplyEmulateInfo:
		return "", s.emulateInfo(ctx, args)
	case rules.ReplyTracking:
		return s.clientTracking(ctx, args)
	case rules.ReplyTrackingState:
		s.trackingState(args)
		return "", nil
	case rules.ReplyEmulateSetName, rules.ReplyEmulateGetName, rules.ReplySession:
		s.writeLocal(resp.AppendError(nil, "ERR tenantguard: unexpected local command"))
		return "", nil
	}
	if s.cache != nil {
		if done, err := s.viaNearCache(ctx, out, p, rp, cmd, args); done {
			return "", err
		}
	}
	return "", s.forward(ctx, out, p)
}

// forward sends a rewritten command upstream: a script to the tenant's
// script connection, anything else to the client's own connection or its
// shared one.
func (s *clientConn) forward(ctx context.Context, cmd []byte, p plan) error {
	var target *upConn
	if p.near != nil {
		target = p.near
	} else if p.script {
		node, err := s.scriptNode(ctx, p)
		var u *upConn
		if err == nil {
			u, err = s.be.scriptConn(ctx, s, node)
		}
		if err != nil {
			s.writeLocal(s.dialFailure(err))
			return nil
		}
		target = u
	} else if s.be.cluster != nil {
		if s.clusterMulti(ctx, cmd, p) {
			return nil
		}
		u, err := s.clusterTarget(ctx, p)
		if err != nil {
			s.writeLocal(s.dialFailure(err))
			return nil
		}
		target = u
	} else {
		if (p.dedicated || s.resp3) && !s.dedicated {
			if err := s.becomeDedicated(ctx); err != nil {
				s.writeLocal(s.dialFailure(err))
				return nil
			}
		}
		if !s.dedicated {
			if _, err := s.sharedConn(ctx); err != nil {
				s.writeLocal(s.dialFailure(err))
				return nil
			}
		}
		target = s.up
	}
	if len(cmd) >= bulkBytes && s.load != nil {
		s.load.markBulk()
	}
	if s.via != target {
		// Replies come back in order per connection only: those owed on
		// the previous one arrive first (on a cluster they are put in
		// order as they arrive: clusterSlot).
		if s.via != nil && s.be.cluster == nil {
			s.waitDrained()
		}
		s.via = target
	}
	sl := slot{plan: p, start: time.Now()}
	switch p.watch { // on a cluster, keeps the node; anywhere, the upstream (placement.go)
	case watchOn:
		s.watching = true
	case watchOff:
		s.watching = false
	}
	inMulti := s.inMulti
	switch {
	case p.multi:
		inMulti = true
		s.queued = s.queued[:0]
	case s.inMulti && p.reply == rules.ReplyExec:
		sl.multi = append([]plan(nil), s.queued...)
		inMulti = false
	case s.inMulti && p.discard:
		inMulti = false
	case s.inMulti:
		s.queued = append(s.queued, p)
		sl.plan.reply = rules.ReplyPlain // the reply now is +QUEUED
	case p.reply == rules.ReplyExec:
		sl.plan.reply = rules.ReplyPlain // EXEC without MULTI: an error
	}
	replies := max(p.replies, 1)
	if !s.dedicated {
		s.waitOwedBelow(maxOwedShared)
	}
	s.qmu.Lock()
	if s.ending && !s.inMulti {
		// Ended while this command was being read: it does not start.
		s.qmu.Unlock()
		s.stopForEnd()
		return errSessionEnded
	}
	s.inMulti = inMulti
	s.pubsub = subscribedAny(s.subs)
	var clCmd []byte
	if s.be.cluster != nil {
		clCmd = append([]byte(nil), cmd...)
		s.markDirty(target)
	}
	for i := 0; i < replies; i++ {
		if clCmd != nil {
			sl.cl = &clusterSlot{cmd: clCmd, via: target}
		}
		s.outq.push(sl)
	}
	s.qmu.Unlock()
	var err error
	if target.fills != nil {
		err = target.sendFill(s, cmd, p.fill)
	} else {
		err = target.send(s, cmd, replies)
	}
	if err != nil {
		s.dropSlots(replies)
		if target == s.up {
			if s.dedicated {
				// Its state died with it: the next stateful command gets a
				// new connection of its own, never a shared one (where
				// pub/sub messages would be taken for others' replies).
				s.be.releaseDedicated(target)
				s.dedicated = false
				s.subs, s.watching, s.heldMulti = nil, false, nil
				s.qmu.Lock()
				s.inMulti, s.pubsub = false, false
				s.qmu.Unlock()
			}
			s.up = nil
		}
		s.via = nil
		s.writeLocal(s.upstreamFailure(msgLostBeforeSend, err))
		return nil
	}
	if p.script {
		_ = target.flush() // not batched with the client's others: they go elsewhere
	}
	return nil
}

// becomeDedicated moves the client onto an upstream connection of its
// own, after every reply owed on the shared one has arrived.
func (s *clientConn) becomeDedicated(ctx context.Context) error {
	if s.up != nil {
		if err := s.up.flush(); err != nil {
			return err
		}
	}
	s.waitDrained()
	u, err := s.be.dedicatedConn(ctx, s, "")
	if err != nil {
		return err
	}
	s.up, s.dedicated, s.via = u, true, u
	return nil
}

// maxOwedShared bounds the replies a client may be owed on a shared
// upstream connection. Replies come back in order, so every reply queued
// there delays the replies of every other client behind it: a client that
// pipelines more (say, large GETs it never reads) waits for its replies
// before more of its commands are read.
const maxOwedShared = 32

// waitOwedBelow blocks until the client is owed fewer than n replies (or
// was cut off), sending what is buffered upstream first.
func (s *clientConn) waitOwedBelow(n int) {
	s.qmu.Lock()
	if s.outq.len() < n || s.cut {
		s.qmu.Unlock()
		return
	}
	s.qmu.Unlock()
	s.flushUpstream()
	s.qmu.Lock()
	for s.outq.len() >= n && !s.cut {
		s.owedWait = true
		s.cond.Wait()
	}
	s.owedWait = false
	s.qmu.Unlock()
}

// waitDrained sends what is buffered upstream and blocks until the client
// has been sent every reply it is owed.
func (s *clientConn) waitDrained() {
	s.flushUpstream()
	if s.via != nil && s.via != s.up && s.be.cluster == nil {
		_ = s.via.flush()
	}
	s.qmu.Lock()
	for s.outq.len() > 0 {
		s.cond.Wait()
	}
	s.qmu.Unlock()
}

func (s *clientConn) dropSlots(n int) {
	s.qmu.Lock()
	for range n {
		s.outq.popBack()
	}
	s.qmu.Unlock()
}

// writeLocal sends a reply of the proxy's own, after any still owed.
func (s *clientConn) writeLocal(b []byte) {
	s.qmu.Lock()
	if s.outq.len() == 0 {
		s.appendOut(b)
	} else {
		s.outq.push(slot{local: b})
	}
	s.qmu.Unlock()
}

// deliver writes an upstream reply to the client, rewritten by its plan,
// then any of the proxy's own replies queued behind it.
func (s *clientConn) deliver(rep *resp.Reply) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.outq.len() == 0 || s.outq.front().local != nil {
		return // the client gave up on it (closed); drop
	}
	sl := *s.outq.front()
	s.popSlot()
	s.latency.Observe(time.Since(sl.start).Seconds())
	if len(rep.Raw()) >= bulkBytes && s.load != nil {
		s.load.markBulk()
	}
	if s.reserve(len(rep.Raw()) + 64) {
		s.out = s.transform(s.out, rep, sl)
	}
	s.drainLocal()
}

// deliverError answers an owed reply with an error (the upstream died).
func (s *clientConn) deliverError(msg string) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.outq.len() == 0 || s.outq.front().local != nil {
		return
	}
	s.popSlot()
	if s.reserve(len(msg) + 3) {
		s.out = resp.AppendError(s.out, msg)
	}
	s.drainLocal()
}

func (s *clientConn) popSlot() {
	s.outq.pop()
	if s.owedWait {
		s.cond.Broadcast()
	}
}

// drainLocal writes queued local replies now at the front. qmu held.
func (s *clientConn) drainLocal() {
	for s.outq.len() > 0 && s.outq.front().local != nil {
		s.appendOut(s.outq.front().local)
		s.popSlot()
	}
	if s.outq.len() == 0 {
		s.cond.Broadcast()
	}
}

// flushClient sends what is buffered for the client, without waiting for
// it to read (see output.go); an ending client is closed once that leaves
// it at a boundary.
func (s *clientConn) flushClient() {
	s.qmu.Lock()
	s.flushLocked()
	s.closeIfDoneLocked()
	s.qmu.Unlock()
}

// closeIfDoneLocked closes the connection of a client that quit, once
// every reply is written, or that is ending, once at a boundary. qmu held.
func (s *clientConn) closeIfDoneLocked() {
	if s.quitting && s.flushedLocked() || s.ending && s.atBoundary() {
		s.kill()
	}
}

func (s *clientConn) refuse(cmd, reason, rule string) {
	s.srv.metrics.refusals.WithLabelValues(s.label, rule).Inc()
	s.writeLocal(resp.AppendError(nil, "NOPERM tenantguard: "+cmd+" is not allowed: "+reason+" (rule "+rule+")"))
}

// finish runs when the client leaves.
func (s *clientConn) finish() {
	s.setLease(nil, nil)
	if s.dedicated && s.up != nil {
		s.be.releaseDedicated(s.up)
	}
	if s.be != nil {
		s.be.drop(s.tenantID)
	}
	// Replies still owed go nowhere: deliver drops what has no slot. A
	// drainer still writing is stopped, and waited for.
	s.qmu.Lock()
	s.outq.clear()
	if s.draining {
		s.cutLocked("")
		for s.draining {
			s.cond.Wait()
		}
	}
	s.cut = true
	s.finished = true
	if s.endTimer != nil {
		s.endTimer.Stop()
	}
	s.cond.Broadcast()
	s.qmu.Unlock()
	s.srv.unregister(s)
}

// lowerName appends a lower-cased command name to dst (names longer than
// dst's capacity give an empty result: no command the client handles
// itself is that long).
func lowerName(dst, b []byte) []byte {
	if len(b) > cap(dst) {
		return dst[:0]
	}
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func itoa(n int64) []byte { return strconv.AppendInt(nil, n, 10) }
