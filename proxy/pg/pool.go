package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// errPoolTimeout is returned when no server connection frees up in time.
var errPoolTimeout = errors.New("pool wait timeout")

// errPoolClosed is returned once the pool is shutting down.
var errPoolClosed = errors.New("pool closed")

// pool holds the server connections of one (host, port, database, user).
// Idle connections are reused most-recently-used first, so a quiet pool
// shrinks by idle timeout; waiters are served first in, first out.
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

	mu       sync.Mutex
	idle     []*serverConn
	total    int
	active   map[string]int           // connections held, by tenant
	queues   map[string][]*poolWaiter // waiters, by tenant, first in first out
	order    []string                 // tenants with waiters, served round robin
	next     int                      // index in order of the next tenant to serve
	closed   bool
	defaults map[string]string // server's ParameterStatus values, learned on first connect
	readers  sync.WaitGroup    // server connection read loops
}

type poolGrant struct {
	sc   *serverConn
	dial bool // the waiter may dial a new connection; total already counts it
}

type poolWaiter struct {
	ch     chan poolGrant
	tenant string
	limit  int
}

func newPool(key string, conf *pgconn.Config, cfg *Config, log *slog.Logger, m *metrics) *pool {
	p := &pool{key: key, conf: conf, cfg: cfg, log: log.With("pool", key), metrics: m,
		idleGauge:    m.serverConns.WithLabelValues(key, "idle"),
		activeGauge:  m.serverConns.WithLabelValues(key, "active"),
		waitingGauge: m.waiting.WithLabelValues(key),
		active:       map[string]int{},
		queues:       map[string][]*poolWaiter{},
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
	return p
}

// acquire returns a server connection for exclusive use by tenant, waiting
// up to the configured time for one to free up. A tenant holds at most limit
// connections at once (0 = the pool size); waiting tenants are served round
// robin, so one tenant's flood cannot starve another.
func (p *pool) acquire(ctx context.Context, tenant string, limit int) (*serverConn, error) {
	start := time.Now()
	defer func() { p.metrics.poolWait.Observe(time.Since(start).Seconds()) }()
	if limit <= 0 || limit > p.cfg.PoolSize {
		limit = p.cfg.PoolSize
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	if p.active[tenant] < limit && len(p.queues[tenant]) == 0 {
		for len(p.idle) > 0 {
			sc := p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
			if sc.expired(start) {
				p.total--
				go sc.close() // closes the socket; its read loop exits on its own
				continue
			}
			p.active[tenant]++
			sc.lease = tenant
			p.mu.Unlock()
			p.idleGauge.Dec()
			p.activeGauge.Inc()
			return sc, nil
		}
		if p.total < p.cfg.PoolSize {
			p.total++
			p.active[tenant]++
			p.mu.Unlock()
			return p.dial(ctx, tenant)
		}
	}
	w := &poolWaiter{ch: make(chan poolGrant, 1), tenant: tenant, limit: limit}
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
	if p.dequeue(w) {
		p.mu.Unlock()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errPoolTimeout
	}
	p.mu.Unlock()
	// Granted while we gave up: use it rather than leak it.
	return p.take(ctx, <-w.ch, tenant)
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
	for i := 0; i < len(p.order); i++ {
		idx := (p.next + i) % len(p.order)
		t := p.order[idx]
		q := p.queues[t]
		w := q[0]
		if p.active[t] >= w.limit {
			continue
		}
		p.active[t]++
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
	p.activeGauge.Inc()
	return g.sc, nil
}

// dial opens a new server connection through the breaker. The caller has
// already counted it in p.total and the tenant's share; on failure both
// are given back.
func (p *pool) dial(ctx context.Context, tenant string) (*serverConn, error) {
	sc, err := p.breaker.Execute(func() (*serverConn, error) {
		dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
		defer cancel()
		// pgconn reads through a background reader that it starts when a
		// write is slow, and stops only after its read in progress returns.
		// Reading the hijacked socket directly would race that goroutine
		// and lose whatever it reads, so keep reading through it: once
		// stopped it hands over its results, then reads the socket.
		conf := p.conf.Copy()
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
	if err != nil {
		p.release(tenant)
		p.slotFreed()
		return nil, err
	}
	sc.lease = tenant
	p.mu.Lock()
	if p.defaults == nil {
		p.defaults = make(map[string]string, len(sc.params))
		for k, v := range sc.params {
			p.defaults[k] = v
		}
	}
	closed := p.closed
	if !closed {
		p.readers.Add(1)
	}
	p.mu.Unlock()
	if closed {
		sc.close()
		p.release(tenant)
		p.slotFreed()
		return nil, errPoolClosed
	}
	go func() {
		defer p.readers.Done()
		sc.readLoop()
	}()
	p.activeGauge.Inc()
	return sc, nil
}

// release takes one connection off tenant's share.
func (p *pool) release(tenant string) {
	p.mu.Lock()
	if p.active[tenant]--; p.active[tenant] <= 0 {
		delete(p.active, tenant)
	}
	p.mu.Unlock()
}

// put returns a clean server connection: to the next waiter, else to the idle stack.
func (p *pool) put(sc *serverConn) {
	p.activeGauge.Dec()
	sc.mu.Lock()
	dead := sc.closed
	sc.mu.Unlock()
	p.release(sc.lease)
	if dead {
		// Its read loop has already discarded it, or is about to.
		p.slotFreed()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.total--
		p.mu.Unlock()
		sc.close()
		return
	}
	if w := p.nextWaiter(); w != nil {
		sc.lease = w.tenant
		p.mu.Unlock()
		w.ch <- poolGrant{sc: sc}
		return
	}
	sc.idleSince = time.Now()
	sc.lease = ""
	p.idle = append(p.idle, sc)
	p.mu.Unlock()
	p.idleGauge.Inc()
}

// discard forgets a server connection that was closed or failed.
func (p *pool) discard(sc *serverConn, wasIdle bool) {
	p.mu.Lock()
	if wasIdle {
		for i, x := range p.idle {
			if x == sc {
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				p.mu.Unlock()
				p.idleGauge.Dec()
				p.slotFreed()
				return
			}
		}
		// Not idle after all: acquire already took it, or expiry closed it.
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.activeGauge.Dec()
	p.release(sc.lease)
	p.slotFreed()
}

// slotFreed gives a connection slot back, letting the next waiter dial.
func (p *pool) slotFreed() {
	p.mu.Lock()
	if !p.closed {
		if w := p.nextWaiter(); w != nil {
			p.mu.Unlock()
			w.ch <- poolGrant{dial: true}
			return
		}
	}
	p.total--
	p.mu.Unlock()
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
	p.put(sc)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.defaults, nil
}

// expire closes idle connections past their idle time or lifetime.
func (p *pool) expire(now time.Time) {
	p.mu.Lock()
	keep := p.idle[:0]
	var drop []*serverConn
	for _, sc := range p.idle {
		if sc.expired(now) {
			drop = append(drop, sc)
			p.total--
		} else {
			keep = append(keep, sc)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, sc := range drop {
		p.idleGauge.Dec()
		sc.close()
	}
}

// close shuts the pool: idle connections close now, busy ones when returned.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.total -= len(idle)
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
		p.idleGauge.Dec()
		sc.close()
	}
}

// wait blocks until every server read loop has exited.
func (p *pool) wait() { p.readers.Wait() }

// cancel sends a CancelRequest for a server backend on a fresh connection
// and waits for the server to close it, which it does after signalling.
func (p *pool) cancel(pid uint32, secret []byte) error {
	network, addr := "tcp", net.JoinHostPort(p.conf.Host, fmt.Sprint(p.conf.Port))
	if len(p.conf.Host) > 0 && p.conf.Host[0] == '/' {
		network, addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", p.conf.Host, p.conf.Port)
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
