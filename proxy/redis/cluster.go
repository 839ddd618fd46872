package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/tenantguard/tenantguard/proxy/redis/clustermap"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// A Redis Cluster upstream (Config.Cluster).
//
// The slot map comes from CLUSTER SHARDS (CLUSTER SLOTS on servers that
// lack it), asked of a known master or a seed. Each master gets one shared,
// multiplexed connection; a client's command goes to the master of its
// namespaced keys' slot (a keyless command stays where the client's last
// command went, or goes to the master of the tenant's own prefix). A
// client's commands to several masters are in flight at once, and their
// replies are put back in the client's order (clusterSlot, in
// cluster_client.go). There is no event loop: every connection has its
// own reader.
//
// A MOVED or ASK reply on a shared connection is never seen by the client:
// its reader replays the command (after ASKING, for ASK) on the target
// node's control connection and delivers that reply in its place, so the
// client's order holds; MOVED, and a lost connection, mark the map stale,
// and the next command refreshes it. A node only answers MOVED or ASK for
// a command it did not run, so the replay never runs a command twice.
// On a dedicated connection (MULTI, WATCH, subscriptions, blocking
// commands) the node may hold state, so nothing is replayed there: the
// client gets -TRYAGAIN, and its next command, outside a transaction,
// moves to the right node.

// maxRedirects bounds the MOVED/ASK hops of one command (redis-cli and
// the cluster clients use 5 or 16).
const maxRedirects = 5

// refreshEvery is the least time between two refreshes of the slot map.
const refreshEvery = 100 * time.Millisecond

// msgCrossSlot is redis-server's own error for keys of different slots.
const msgCrossSlot = "CROSSSLOT Keys in request don't hash to the same slot"

// msgSlotMoved answers a MOVED/ASK on a connection that may hold state.
const msgSlotMoved = "TRYAGAIN tenantguard: the key's slot moved to another cluster node; retry the command (outside MULTI)"

// clusterUpstream is a Redis Cluster behind the listener.
type clusterUpstream struct {
	srv   *Server
	seeds []string
	topo  atomic.Pointer[clustermap.Map]
	stale atomic.Bool

	refreshMu   sync.Mutex // one refresh at a time
	lastRefresh time.Time  // guarded by refreshMu

	mu       sync.Mutex
	shared   map[string]*upConn // by master address
	ctl      map[string]*ctlConn
	breakers map[string]*gobreaker.CircuitBreaker[*upConn]
	closed   bool
}

// ctlConn is a node's connection for the proxy's own round trips (slot
// map, redirected commands, KEYS, SCAN): used by one caller at a time,
// with no reader goroutine.
type ctlConn struct {
	mu sync.Mutex
	u  *upConn // nil until dialled, and after a failure
}

func newClusterUpstream(srv *Server, seeds []string) *clusterUpstream {
	return &clusterUpstream{
		srv: srv, seeds: slices.Clone(seeds),
		shared:   map[string]*upConn{},
		ctl:      map[string]*ctlConn{},
		breakers: map[string]*gobreaker.CircuitBreaker[*upConn]{},
	}
}

// dial connects to the node at addr as the proxy's user, through that
// node's breaker.
func (c *clusterUpstream) dial(ctx context.Context, addr string, resp3 bool) (*upConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("shutting down")
	}
	b := c.breakers[addr]
	if b == nil {
		cfg := c.srv.cfg
		b = gobreaker.NewCircuitBreaker[*upConn](gobreaker.Settings{
			Name:    addr,
			Timeout: cfg.BreakerOpenTime,
			ReadyToTrip: func(n gobreaker.Counts) bool {
				return n.ConsecutiveFailures >= cfg.BreakerFailures
			},
			OnStateChange: func(name string, from, to gobreaker.State) {
				c.srv.log.Warn("redis cluster node circuit breaker", "node", name, "from", from.String(), "to", to.String())
			},
		})
		c.breakers[addr] = b
	}
	c.mu.Unlock()
	return b.Execute(func() (*upConn, error) {
		return c.srv.dialAs(ctx, addr, resp3, c.srv.upstreamUser(), c.srv.cfg.UpstreamPassword)
	})
}

// slotMap returns the current map, refreshing it first when there is
// none or it is stale.
func (c *clusterUpstream) slotMap(ctx context.Context) (*clustermap.Map, error) {
	m := c.topo.Load()
	if m != nil && !c.stale.Load() {
		return m, nil
	}
	if err := c.refresh(ctx); err != nil && m == nil {
		return nil, err
	}
	return c.topo.Load(), nil
}

// masterFor returns the address of the master serving slot.
func (c *clusterUpstream) masterFor(ctx context.Context, slot uint16) (string, error) {
	m, err := c.slotMap(ctx)
	if err != nil {
		return "", err
	}
	addr, ok := m.Master(slot)
	if !ok {
		c.stale.Store(true)
		return "", fmt.Errorf("cluster slot %d is not served by any master", slot)
	}
	return addr, nil
}

// anyMaster returns some master's address.
func (c *clusterUpstream) anyMaster(ctx context.Context) (string, error) {
	m, err := c.slotMap(ctx)
	if err != nil {
		return "", err
	}
	if ms := m.Masters(); len(ms) > 0 {
		return ms[0], nil
	}
	return "", errors.New("cluster has no master")
}

// masters returns the masters' addresses, sorted (SCAN's cursor numbers
// them).
func (c *clusterUpstream) masters(ctx context.Context) ([]string, error) {
	m, err := c.slotMap(ctx)
	if err != nil {
		return nil, err
	}
	return sortedMasters(m), nil
}

func sortedMasters(m *clustermap.Map) []string {
	ms := m.Masters()
	slices.Sort(ms)
	return ms
}

// refresh reads the slot map from the first node that gives a whole one:
// the known masters, then the seeds. At most one refresh runs, and not
// more often than refreshEvery while a map exists.
func (c *clusterUpstream) refresh(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	old := c.topo.Load()
	if old != nil && time.Since(c.lastRefresh) < refreshEvery {
		return nil
	}
	c.lastRefresh = time.Now()
	var candidates []string
	if old != nil {
		candidates = old.Masters()
	}
	for _, s := range c.seeds {
		if !slices.Contains(candidates, s) {
			candidates = append(candidates, s)
		}
	}
	var errs []error
	for _, addr := range candidates {
		m, err := c.readMap(ctx, addr)
		if err == nil && m.Covered() < clustermap.Slots && old != nil && old.Covered() == clustermap.Slots {
			err = fmt.Errorf("its map covers %d slots only", m.Covered())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		c.topo.Store(m)
		c.stale.Store(false)
		if now := sortedMasters(m); old == nil || !slices.Equal(sortedMasters(old), now) {
			c.srv.log.Info("redis cluster slot map", "masters", strings.Join(now, ","), "slots", m.Covered())
		}
		return nil
	}
	err := fmt.Errorf("redis cluster slot map: %w", errors.Join(errs...))
	c.srv.log.Warn("redis cluster slot map refresh failed", "error", err)
	return err
}

// readMap asks one node for the slot map.
func (c *clusterUpstream) readMap(ctx context.Context, addr string) (*clustermap.Map, error) {
	host, _, _ := net.SplitHostPort(addr)
	var m *clustermap.Map
	err := c.roundTrip(ctx, addr, func(u *upConn) error {
		rep, err := u.call([][]byte{[]byte("CLUSTER"), []byte("SHARDS")})
		if err != nil {
			return err
		}
		if rep.Root().Type() != resp.TypeSimpleError {
			if c.srv.cfg.UpstreamTLS != nil {
				m, err = clustermap.ParseShardsTLS(rep.Root(), host)
			} else {
				m, err = clustermap.ParseShards(rep.Root(), host)
			}
			return err
		}
		// Before Redis 7: CLUSTER SLOTS.
		if rep, err = u.call([][]byte{[]byte("CLUSTER"), []byte("SLOTS")}); err != nil {
			return err
		}
		if rep.Root().Type() == resp.TypeSimpleError {
			return fmt.Errorf("CLUSTER SLOTS: %s", rep.Root().Bytes())
		}
		m, err = clustermap.ParseSlots(rep.Root(), host)
		return err
	})
	return m, err
}

// call writes one command on a connection without a reader and reads its
// reply, valid until the next read.
func (u *upConn) call(args [][]byte) (*resp.Reply, error) {
	if _, err := u.conn.Write(resp.AppendCommand(nil, args)); err != nil {
		return nil, err
	}
	return u.rr.ReadReply()
}

// roundTrip runs fn on the node's control connection, dialling it if
// needed; a failure closes it (the next call dials again).
func (c *clusterUpstream) roundTrip(ctx context.Context, addr string, fn func(*upConn) error) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("shutting down")
	}
	cc := c.ctl[addr]
	if cc == nil {
		cc = &ctlConn{}
		c.ctl[addr] = cc
	}
	c.mu.Unlock()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.u == nil {
		u, err := c.dial(ctx, addr, false)
		if err != nil {
			return err
		}
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			u.closeNoReader()
			return errors.New("shutting down")
		}
		cc.u = u
	}
	_ = cc.u.conn.SetDeadline(time.Now().Add(c.srv.cfg.ConnectTimeout))
	err := fn(cc.u)
	if err != nil && !errors.Is(err, clustermap.ErrTopology) {
		// The connection may be anywhere in a reply: drop it.
		cc.u.closeNoReader()
		cc.u = nil
		c.stale.Store(true)
		return err
	}
	_ = cc.u.conn.SetDeadline(time.Time{})
	return err
}

// sharedConn returns the shared connection to the master at addr,
// dialling it if needed.
func (c *clusterUpstream) sharedConn(ctx context.Context, addr string) (*upConn, error) {
	c.mu.Lock()
	u := c.shared[addr]
	c.mu.Unlock()
	if u != nil {
		return u, nil
	}
	u, err := c.dial(ctx, addr, false)
	if err != nil {
		c.stale.Store(true)
		return nil, err
	}
	c.mu.Lock()
	if c.closed || c.srv.acc.Draining() {
		c.mu.Unlock()
		u.closeNoReader()
		return nil, errors.New("shutting down")
	}
	if cur := c.shared[addr]; cur != nil {
		c.mu.Unlock()
		u.closeNoReader()
		return cur, nil
	}
	c.shared[addr] = u
	c.mu.Unlock()
	c.srv.startReader(u)
	return u, nil
}

// lost forgets a failed shared connection; the topology may have changed.
func (c *clusterUpstream) lost(u *upConn) {
	c.mu.Lock()
	if c.shared[u.addr] == u {
		delete(c.shared, u.addr)
	}
	c.mu.Unlock()
	c.stale.Store(true)
}

// close closes every connection (Shutdown); the shared ones' readers end.
func (c *clusterUpstream) close() {
	c.mu.Lock()
	c.closed = true
	shared := c.shared
	c.shared = map[string]*upConn{}
	ctl := c.ctl
	c.ctl = map[string]*ctlConn{}
	c.mu.Unlock()
	for _, u := range shared {
		u.close()
	}
	for _, cc := range ctl {
		cc.mu.Lock()
		if cc.u != nil {
			cc.u.closeNoReader()
			cc.u = nil
		}
		cc.mu.Unlock()
	}
}

// deliver hands a reply read on u to s, following a MOVED or ASK on a
// shared connection (see above).
func (c *clusterUpstream) deliver(s *clientConn, u *upConn, rep *resp.Reply) {
	root := rep.Root()
	if root.Type() != resp.TypeSimpleError {
		s.completeFor(u, rep, "")
		return
	}
	host, _, _ := net.SplitHostPort(u.addr)
	r, ok := clustermap.ParseRedirect(root.Bytes(), host)
	if !ok {
		if msg := root.Bytes(); hasPrefix(msg, "CLUSTERDOWN") || hasPrefix(msg, "TRYAGAIN") {
			c.stale.Store(true)
		}
		s.completeFor(u, rep, "")
		return
	}
	if !r.Ask {
		c.stale.Store(true)
	}
	cl := s.owedOn(u)
	if cl == nil {
		return // the client has gone
	}
	if u.dedicated != nil || u.confined {
		// State may live there, or (a script) the command ran as the
		// tenant's own user: never replay it as the proxy's.
		c.srv.metrics.clusterRedirects.WithLabelValues(redirectKind(r), "refused").Inc()
		s.complete(cl, nil, msgSlotMoved)
		return
	}
	c.srv.metrics.clusterRedirects.WithLabelValues(redirectKind(r), "replayed").Inc()
	c.replay(s, r, cl)
}

func redirectKind(r clustermap.Redirect) string {
	if r.Ask {
		return "ask"
	}
	return "moved"
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

// replay runs cl's command where r points, following further
// redirections, and delivers the final reply to s as cl's.
func (c *clusterUpstream) replay(s *clientConn, r clustermap.Redirect, cl *clusterSlot) {
	cmd := cl.cmd
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.cfg.ConnectTimeout)
	defer cancel()
	for range maxRedirects {
		var next clustermap.Redirect
		redirected := false
		err := c.roundTrip(ctx, r.Addr, func(u *upConn) error {
			buf := cmd
			if r.Ask {
				buf = append(resp.AppendCommand(nil, [][]byte{[]byte("ASKING")}), cmd...)
			}
			if _, err := u.conn.Write(buf); err != nil {
				return err
			}
			if r.Ask {
				if _, err := u.rr.ReadReply(); err != nil {
					return err
				}
			}
			rep, err := u.rr.ReadReply()
			if err != nil {
				return err
			}
			if root := rep.Root(); root.Type() == resp.TypeSimpleError {
				host, _, _ := net.SplitHostPort(r.Addr)
				if next, redirected = clustermap.ParseRedirect(root.Bytes(), host); redirected {
					return nil
				}
			}
			s.complete(cl, rep, "")
			return nil
		})
		if err != nil {
			ref := newRef()
			c.srv.log.Warn("redis cluster redirect failed", "tenant", s.tenantID, "client", s.id, "ref", ref, "node", r.Addr, "error", err)
			s.complete(cl, nil, withRef(msgLostReplyOwed, ref))
			return
		}
		if !redirected {
			return
		}
		if !next.Ask {
			c.stale.Store(true)
		}
		r = next
	}
	s.complete(cl, nil, msgSlotMoved)
}
