package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/tenantguard/tenantguard/internal/connbuf"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// errPoolTimeout is returned when no server connection frees up in time.
var errPoolTimeout = errors.New("pool wait timeout")

// errPoolClosed is returned once the pool is shutting down.
var errPoolClosed = errors.New("pool closed")

// pool holds the server connections of one (host, port, database, user).
// Idle connections are reused most-recently-used first, so a quiet pool
// shrinks by idle timeout; waiters are served first in, first out within
// a tenant, round robin across tenants.
//
// The pool counts every connection from the moment a slot is taken for
// dialling it until its read loop exits (total), and each either on the
// idle stack (serverConn.inIdle) or leased to a tenant (serverConn.leased,
// counted in active). Those fields change only under mu.
type pool struct {
	key     string
	conf    *pgconn.Config
	cfg     *Config
	log     *slog.Logger
	metrics *metrics
	breaker *gobreaker.CircuitBreaker[*serverConn]

	idleGauge    prometheus.Gauge
	activeGauge  prometheus.Gauge
	waitingGauge prometheus.Gauge

	notifier *notifier // LISTEN on behalf of the pool's clients

	// slots counts the connections of the pool's cluster against its share
	// of the fleet's budget (cluster.go); every pool has one.
	slots *clusterSlots

	mu       sync.Mutex
	idle     []*serverConn
	total    int
	active   map[string]int           // connections held, by tenant
	queues   map[string][]*poolWaiter // waiters, by tenant, first in first out
	order    []string                 // tenants with waiters, served round robin
	next     int                      // index in order of the next tenant to serve
	closed   bool
	defaults map[string]string // server's ParameterStatus values, learned on first connect
	all      map[*serverConn]struct{}
	dialing  int
	// clients counts the client connections routed to this pool, and
	// unusedSince is when it last dropped to zero: a cluster pool with no
	// clients and no connections is retired (placement.go).
	clients     int
	unusedSince time.Time

	// Totals since start, for the console's SHOW STATS.
	xacts, queries          atomic.Int64
	xactUs, queryUs, waitUs atomic.Int64
	readers                 sync.WaitGroup // server connection read loops
}

type poolGrant struct {
	sc   *serverConn
	dial bool // the waiter may dial a new connection; total already counts it
}

type poolWaiter struct {
	ch     chan poolGrant
	tenant string
	limit  int // the tenant's max_transactions; 0: the pool's capacity
}

func newPool(key string, conf *pgconn.Config, cfg *Config, log *slog.Logger, m *metrics, slots *clusterSlots) *pool {
	p := &pool{key: key, conf: conf, cfg: cfg, log: log.With("pool", key), metrics: m, slots: slots, unusedSince: time.Now(),
		idleGauge:    m.serverConns.WithLabelValues(key, "idle"),
		activeGauge:  m.serverConns.WithLabelValues(key, "active"),
		waitingGauge: m.waiting.WithLabelValues(key),
		active:       map[string]int{},
		queues:       map[string][]*poolWaiter{},
		all:          map[*serverConn]struct{}{},
	}
	p.breaker = gobreaker.NewCircuitBreaker[*serverConn](gobreaker.Settings{
		Name:    key,
		Timeout: cfg.BreakerOpenTime,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.BreakerFailures
		},
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			p.log.Warn("upstream circuit breaker", "from", from.String(), "to", to.String())
			m.breakerState.WithLabelValues(name).Set(float64(to))
		},
	})
	m.breakerState.WithLabelValues(key).Set(0)
	p.notifier = newNotifier(p)
	slots.add(p)
	return p
}

// capacity is how many connections one tenant may hold at most: the
// cluster's share when a budget applies, else pool.size.
func (p *pool) capacity() int {
	if n, ok := p.slots.share(); ok {
		return n
	}
	return p.cfg.PoolSize
}

// tenantLimit is a waiter's or an acquirer's effective cap.
func (p *pool) tenantLimit(limit, capacity int) int {
	if limit <= 0 || limit > capacity {
		return capacity
	}
	return limit
}

// canDial takes a slot for one more connection if pool.size (no budget)
// or the cluster's share (a budget) allows. Called with p.mu held.
func (p *pool) canDial() bool {
	return p.slots.tryTake(p.total, p.cfg.PoolSize)
}

// acquire returns a server connection leased to tenant, waiting up to the
// configured time for one to free up. A tenant holds at most limit
// connections at once (0 = the pool size); waiting tenants are served round
// robin, so one tenant's flood cannot starve another. The connection may
// have died meanwhile: the caller attaches it (clientConn.attach), which
// fails for a connection no longer idle, and then asks again.
func (p *pool) acquire(ctx context.Context, tenant string, limit int) (*serverConn, error) {
	start := time.Now()
	defer func() {
		d := time.Since(start)
		p.metrics.poolWait.Observe(d.Seconds())
		p.waitUs.Add(int64(d / time.Microsecond))
	}()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	if p.active[tenant] < p.tenantLimit(limit, p.capacity()) && len(p.queues[tenant]) == 0 {
		sc, expired := p.popIdle(start)
		if sc != nil {
			p.leaseTo(sc, tenant)
			p.mu.Unlock()
			closeAll(expired)
			return sc, nil
		}
		if p.canDial() {
			p.total++
			p.active[tenant]++
			p.mu.Unlock()
			closeAll(expired)
			return p.dial(ctx, tenant)
		}
		defer closeAll(expired)
	}
	w := &poolWaiter{ch: make(chan poolGrant, 1), tenant: tenant, limit: max(limit, 0)}
	if len(p.queues[tenant]) == 0 {
		p.order = append(p.order, tenant)
	}
	p.queues[tenant] = append(p.queues[tenant], w)
	p.waitingGauge.Inc()
	p.mu.Unlock()

	timer := time.NewTimer(p.cfg.PoolWaitTimeout)
	defer timer.Stop()
	select {
	case g := <-w.ch:
		return p.take(ctx, g, tenant)
	case <-timer.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	gaveUp := p.dequeue(w)
	p.mu.Unlock()
	if gaveUp {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errPoolTimeout
	}
	// Granted while we gave up: use it rather than leak it.
	return p.take(ctx, <-w.ch, tenant)
}

// popIdle takes the most recently used live idle connection off the
// stack; expired ones it meets come off too, for the caller to close once
// it has let go of p.mu (they are counted until their read loops exit).
// Called with p.mu held.
func (p *pool) popIdle(now time.Time) (sc *serverConn, expired []*serverConn) {
	for len(p.idle) > 0 {
		sc := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		sc.inIdle = false
		p.idleGauge.Dec()
		if sc.expired(now) {
			expired = append(expired, sc)
			continue
		}
		return sc, expired
	}
	return nil, expired
}

// closeAll retires idle connections (serverConn.retire).
func closeAll(conns []*serverConn) {
	for _, sc := range conns {
		sc.retire()
	}
}

// leaseTo counts sc against tenant's share. Called with p.mu held.
func (p *pool) leaseTo(sc *serverConn, tenant string) {
	sc.leased, sc.lease = true, tenant
	p.active[tenant]++
	p.activeGauge.Inc()
}

// unlease takes sc off its tenant's share. Called with p.mu held.
func (p *pool) unlease(sc *serverConn) {
	if !sc.leased {
		return
	}
	sc.leased = false
	if p.active[sc.lease]--; p.active[sc.lease] <= 0 {
		delete(p.active, sc.lease)
	}
	p.activeGauge.Dec()
}

// dequeue removes a waiter that gave up; false if it was already granted.
// Called with p.mu held.
func (p *pool) dequeue(w *poolWaiter) bool {
	q := p.queues[w.tenant]
	for i, x := range q {
		if x == w {
			p.waitingGauge.Dec()
			q = append(q[:i], q[i+1:]...)
			p.queues[w.tenant] = q
			if len(q) == 0 {
				p.dropTurn(w.tenant)
			}
			return true
		}
	}
	return false
}

func (p *pool) dropTurn(tenant string) {
	delete(p.queues, tenant)
	for i, t := range p.order {
		if t == tenant {
			p.order = append(p.order[:i], p.order[i+1:]...)
			if p.next > i {
				p.next--
			}
			return
		}
	}
}

// nextWaiter picks, round robin over tenants, the first waiter whose
// tenant is under its limit, and counts the connection against it.
// Called with p.mu held.
func (p *pool) nextWaiter() *poolWaiter {
	capacity := -1
	for i := 0; i < len(p.order); i++ {
		idx := (p.next + i) % len(p.order)
		t := p.order[idx]
		q := p.queues[t]
		w := q[0]
		if capacity < 0 {
			capacity = p.capacity()
		}
		if p.active[t] >= p.tenantLimit(w.limit, capacity) {
			continue
		}
		p.waitingGauge.Dec()
		if len(q) == 1 {
			p.dropTurn(t)
			if len(p.order) > 0 {
				p.next = idx % len(p.order)
			} else {
				p.next = 0
			}
		} else {
			p.queues[t] = q[1:]
			p.next = (idx + 1) % len(p.order)
		}
		return w
	}
	return nil
}

func (p *pool) take(ctx context.Context, g poolGrant, tenant string) (*serverConn, error) {
	if g.dial {
		return p.dial(ctx, tenant)
	}
	if g.sc == nil {
		return nil, errPoolClosed
	}
	return g.sc, nil
}

// dial opens a new server connection through the breaker. The caller has
// already counted it in p.total and the tenant's share; on failure both
// are given back.
func (p *pool) dial(ctx context.Context, tenant string) (*serverConn, error) {
	p.mu.Lock()
	p.dialing++
	p.mu.Unlock()
	sc, err := p.breaker.Execute(func() (*serverConn, error) {
		dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
		defer cancel()
		// pgconn reads through a background reader that it starts when a
		// write is slow, and stops only after its read in progress returns.
		// Reading the hijacked socket directly would race that goroutine
		// and lose whatever it reads, so keep reading through it: once
		// stopped it hands over its results, then reads the socket.
		conf := p.conf.Copy()
		dial := conf.DialFunc
		conf.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return connbuf.Raw(c), nil
		}
		var reader io.Reader
		conf.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
			reader = r
			return pgproto3.NewFrontend(r, w)
		}
		pc, err := pgconn.ConnectConfig(dctx, conf)
		if err != nil {
			return nil, err
		}
		hj, err := pc.Hijack()
		if err != nil {
			pc.Close(context.Background())
			return nil, err
		}
		if hj.Frontend.ReadBufferLen() != 0 {
			_ = hj.Conn.Close()
			return nil, errors.New("upstream sent data after ReadyForQuery during startup")
		}
		return newServerConn(p, hj, reader), nil
	})
	p.mu.Lock()
	p.dialing--
	if err == nil && p.closed {
		err = errPoolClosed
		_ = sc.conn.Close()
	}
	if err != nil {
		if p.active[tenant]--; p.active[tenant] <= 0 {
			delete(p.active, tenant)
		}
		p.mu.Unlock()
		p.slotFreed()
		return nil, err
	}
	sc.leased, sc.lease = true, tenant
	p.activeGauge.Inc()
	p.all[sc] = struct{}{}
	if p.defaults == nil {
		p.defaults = maps.Clone(sc.params)
	}
	p.readers.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.readers.Done()
		sc.readLoop()
	}()
	return sc, nil
}

// put takes back a connection that is clean and idle (its state already
// connIdle): to the next waiter, else onto the idle stack. Called with
// sc.mu held.
func (p *pool) put(sc *serverConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unlease(sc)
	if p.closed || p.slots.over() {
		// Closing, or the cluster's share shrank: the connection goes,
		// counted until its read loop exits (terminate).
		sc.state = connClosing
		sc.terminate()
		return
	}
	if w := p.nextWaiter(); w != nil {
		p.leaseTo(sc, w.tenant)
		w.ch <- poolGrant{sc: sc}
		return
	}
	sc.idleSince = time.Now()
	sc.inIdle = true
	p.idle = append(p.idle, sc)
	p.idleGauge.Inc()
}

// forget stops counting a connection whose read loop has exited, and lets
// the next waiter dial in its place. It runs exactly once per connection.
func (p *pool) forget(sc *serverConn) {
	p.mu.Lock()
	delete(p.all, sc)
	if sc.inIdle {
		sc.inIdle = false
		for i, x := range p.idle {
			if x == sc {
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				break
			}
		}
		p.idleGauge.Dec()
	}
	p.unlease(sc)
	p.mu.Unlock()
	p.slotFreed()
}

// slotFreed gives a connection slot back, letting the next waiter dial.
// The slot passes to the waiter unless the cluster holds more than its
// share; then it goes back, and other pools of the cluster may use it.
func (p *pool) slotFreed() {
	p.mu.Lock()
	if !p.closed && !p.slots.over() {
		if w := p.nextWaiter(); w != nil {
			p.active[w.tenant]++
			p.mu.Unlock()
			w.ch <- poolGrant{dial: true}
			return
		}
	}
	p.total--
	wake := p.slots.give()
	p.mu.Unlock()
	if wake {
		p.slots.wake()
	}
}

// grantDials lets waiters dial while the cluster has slots: after its
// share grew, or another of its pools gave a slot back.
func (p *pool) grantDials() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && len(p.order) > 0 && p.canDial() {
		w := p.nextWaiter()
		if w == nil {
			p.slots.give() // every waiting tenant is at its own limit
			return
		}
		p.total++
		p.active[w.tenant]++
		w.ch <- poolGrant{dial: true}
	}
}

// shed closes idle connections while the cluster holds more than its
// share; busy ones close as they come back (put).
func (p *pool) shed() {
	p.mu.Lock()
	n := p.slots.excess()
	var drop []*serverConn
	for ; n > 0 && len(p.idle) > 0; n-- {
		sc := p.idle[0] // least recently used first
		p.idle[0] = nil
		p.idle = p.idle[1:]
		sc.inIdle = false
		p.idleGauge.Dec()
		drop = append(drop, sc)
	}
	p.mu.Unlock()
	closeAll(drop)
}

// load is what the pool holds and needs: connections leased, and waiters.
func (p *pool) load() (active, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.active {
		active += n
	}
	for _, q := range p.queues {
		waiting += len(q)
	}
	return active, waiting
}

// paramDefaults returns the server's startup ParameterStatus values,
// connecting once if no connection has been made yet.
func (p *pool) paramDefaults(ctx context.Context) (map[string]string, error) {
	p.mu.Lock()
	d := p.defaults
	p.mu.Unlock()
	if d != nil {
		return d, nil
	}
	sc, err := p.acquire(ctx, "", 0)
	if err != nil {
		return nil, err
	}
	sc.mu.Lock()
	if sc.state == connIdle {
		p.put(sc)
	}
	sc.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.defaults, nil
}

// poolStats is a snapshot of a pool for the console.
type poolStats struct {
	idle, dialing           int
	leased                  map[string]int // connections held, by tenant
	xacts, queries          int64
	xactUs, queryUs, waitUs int64
}

func (p *pool) stats() poolStats {
	p.mu.Lock()
	st := poolStats{idle: len(p.idle), dialing: p.dialing, leased: maps.Clone(p.active)}
	p.mu.Unlock()
	st.xacts, st.queries = p.xacts.Load(), p.queries.Load()
	st.xactUs, st.queryUs, st.waitUs = p.xactUs.Load(), p.queryUs.Load(), p.waitUs.Load()
	return st
}

// conns lists the pool's connections, whatever their state.
func (p *pool) conns() []*serverConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*serverConn, 0, len(p.all))
	for sc := range p.all {
		out = append(out, sc)
	}
	return out
}

// defaultsLoaded returns the server's startup ParameterStatus values, once
// paramDefaults has learned them.
func (p *pool) defaultsLoaded() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.defaults
}

// expire closes idle connections past their idle time or lifetime. They
// leave the idle stack now, and the pool's count when their read loops exit.
func (p *pool) expire(now time.Time) {
	p.mu.Lock()
	keep := p.idle[:0]
	var drop []*serverConn
	for _, sc := range p.idle {
		if sc.expired(now) {
			sc.inIdle = false
			p.idleGauge.Dec()
			drop = append(drop, sc)
		} else {
			keep = append(keep, sc)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	closeAll(drop)
}

// close shuts the pool: idle connections close now, busy ones when returned.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	for _, sc := range idle {
		sc.inIdle = false
		p.idleGauge.Dec()
	}
	var waiters []*poolWaiter
	for _, q := range p.queues {
		waiters = append(waiters, q...)
	}
	clear(p.queues)
	p.order = nil
	p.waitingGauge.Set(0)
	p.mu.Unlock()
	for _, w := range waiters {
		w.ch <- poolGrant{}
	}
	for _, sc := range idle {
		sc.closeSocket()
	}
}

// wait blocks until every server read loop, the notifier's included, has exited.
func (p *pool) wait() {
	p.notifier.close()
	p.readers.Wait()
}

// cancel sends a CancelRequest for sc's backend on a fresh connection
// and waits for the server to close it, which it does after signalling.
// It goes to the address sc is connected to: a cluster's pool may have
// connected to any of its hosts.
func (p *pool) cancel(sc *serverConn, pid uint32, secret []byte) error {
	network, addr := "tcp", net.JoinHostPort(p.conf.Host, fmt.Sprint(p.conf.Port))
	if len(p.conf.Host) > 0 && p.conf.Host[0] == '/' {
		network, addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", p.conf.Host, p.conf.Port)
	} else if ra := sc.conn.RemoteAddr(); ra != nil && ra.Network() == "tcp" {
		addr = ra.String()
	}
	c, err := net.DialTimeout(network, addr, p.cfg.ConnectTimeout)
	if err != nil {
		return fmt.Errorf("cancel dial %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(p.cfg.ConnectTimeout))
	msg := wire.CancelRequest(pid, secret)
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("cancel write: %w", err)
	}
	var b [1]byte
	_, _ = c.Read(b[:]) // the server closes the connection once the signal is sent
	return nil
}
