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

	idleGauge   prometheus.Gauge
	activeGauge prometheus.Gauge

	mu       sync.Mutex
	idle     []*serverConn
	total    int
	waiters  []*poolWaiter
	closed   bool
	defaults map[string]string // server's ParameterStatus values, learned on first connect
	readers  sync.WaitGroup    // server connection read loops
}

type poolGrant struct {
	sc   *serverConn
	dial bool // the waiter may dial a new connection; total already counts it
}

type poolWaiter struct{ ch chan poolGrant }

func newPool(key string, conf *pgconn.Config, cfg *Config, log *slog.Logger, m *metrics) *pool {
	p := &pool{key: key, conf: conf, cfg: cfg, log: log.With("pool", key), metrics: m,
		idleGauge:   m.serverConns.WithLabelValues(key, "idle"),
		activeGauge: m.serverConns.WithLabelValues(key, "active"),
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

// acquire returns a server connection for exclusive use, waiting up to the
// configured time for one to free up.
func (p *pool) acquire(ctx context.Context) (*serverConn, error) {
	start := time.Now()
	defer func() { p.metrics.poolWait.Observe(time.Since(start).Seconds()) }()
	now := time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	for len(p.idle) > 0 {
		sc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if sc.expired(now) {
			p.total--
			go sc.close() // closes the socket; its read loop exits on its own
			continue
		}
		p.mu.Unlock()
		p.idleGauge.Dec()
		p.activeGauge.Inc()
		return sc, nil
	}
	if p.total < p.cfg.PoolSize {
		p.total++
		p.mu.Unlock()
		return p.dial(ctx)
	}
	w := &poolWaiter{ch: make(chan poolGrant, 1)}
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()

	timer := time.NewTimer(p.cfg.PoolWaitTimeout)
	defer timer.Stop()
	select {
	case g := <-w.ch:
		return p.take(ctx, g)
	case <-timer.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, errPoolTimeout
		}
	}
	p.mu.Unlock()
	// Granted while we gave up: use it rather than leak it.
	return p.take(ctx, <-w.ch)
}

func (p *pool) take(ctx context.Context, g poolGrant) (*serverConn, error) {
	if g.dial {
		return p.dial(ctx)
	}
	if g.sc == nil {
		return nil, errPoolClosed
	}
	p.activeGauge.Inc()
	return g.sc, nil
}

// dial opens a new server connection through the breaker. The caller has
// already counted it in p.total; on failure the slot is given back.
func (p *pool) dial(ctx context.Context) (*serverConn, error) {
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
		p.slotFreed()
		return nil, err
	}
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

// put returns a clean server connection: to the first waiter, else to the idle stack.
func (p *pool) put(sc *serverConn) {
	p.activeGauge.Dec()
	sc.mu.Lock()
	dead := sc.closed
	sc.mu.Unlock()
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
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w.ch <- poolGrant{sc: sc}
		return
	}
	sc.idleSince = time.Now()
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
	p.slotFreed()
}

// slotFreed gives a connection slot back, letting the first waiter dial.
func (p *pool) slotFreed() {
	p.mu.Lock()
	if len(p.waiters) > 0 && !p.closed {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w.ch <- poolGrant{dial: true}
		return
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
	sc, err := p.acquire(ctx)
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
	waiters := p.waiters
	p.waiters = nil
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
