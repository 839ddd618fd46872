// Package netserve runs the accept loops of the data-plane listeners: it
// owns the listeners and one goroutine per connection, caps how many
// connections are open at once, keeps accepting when the process runs out
// of file descriptors (shedding the connections it cannot serve with a
// refusal, as Envoy's overload manager and nginx do, instead of exiting or
// spinning), recovers a panicking connection, and stops accepting and waits
// for connections on shutdown.
package netserve

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Acceptor tracks a server's listeners and connection goroutines.
type Acceptor struct {
	// Log receives panics of connection handlers and shedding warnings.
	Log *slog.Logger
	// MaxConns caps the connections this acceptor serves at once (a
	// listener's max_client_connections); 0 is no cap of its own.
	MaxConns int
	// Budget, when set, is a cap shared with the process's other
	// acceptors: the file descriptors left for clients.
	Budget *Budget
	// Refuse, when set, writes a protocol-level refusal ("too many
	// connections") to a connection that is not served. It runs on the
	// accept loop with a short write deadline set, so it must only write.
	Refuse func(net.Conn)
	// MaxConnsPerSource caps the connections served at once from one
	// source IP address (a gateway serving many app pods: one pod's
	// connection leak must not take every slot); 0 is no cap.
	MaxConnsPerSource int
	// RefuseSource, when set, is Refuse for a connection over
	// MaxConnsPerSource; nil uses Refuse.
	RefuseSource func(net.Conn)
	// FailedHandshakesPerSecond paces accepts once connections fail
	// their handshakes faster than this (pacing.go): 0 is
	// DefaultFailedHandshakesPerSecond, negative is no pacing. Handlers
	// report failures with HandshakeFailed.
	FailedHandshakesPerSecond int

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	draining  bool
	conns     sync.WaitGroup
	open      atomic.Int64
	shed      atomic.Int64
	lastWarn  atomic.Int64 // unix nanos of the last shedding warning
	parker    parker

	paceOnce sync.Once
	pace     *pacing // nil: no pacing
	paced    atomic.Int64

	srcMu   sync.Mutex
	sources map[netip.Addr]int // open connections per source, with MaxConnsPerSource
	srcShed atomic.Int64
}

// refuseTimeout bounds the refusal written to a shed connection: a few
// dozen bytes into an empty socket buffer, so only a broken peer waits.
const refuseTimeout = 100 * time.Millisecond

// Serve accepts connections on ln and runs handle for each in its own
// goroutine, until Drain. It returns nil after Drain, and an error only
// when the listener fails for good. handle returns true when it has parked
// the connection (Park) instead of finishing with it: the connection stays
// open and counted, and its handler resumes in a new goroutine.
func (a *Acceptor) Serve(ln net.Listener, handle func(net.Conn) (parked bool)) error {
	a.mu.Lock()
	if a.draining {
		a.mu.Unlock()
		return nil
	}
	if a.listeners == nil {
		a.listeners = map[net.Listener]struct{}{}
	}
	a.listeners[ln] = struct{}{}
	a.mu.Unlock()
	spare.init()
	p := a.pacing()
	var delay time.Duration
	for {
		if p != nil {
			if d := p.delay(); d > 0 {
				a.paced.Add(1)
				a.warn("connections are failing their handshakes faster than failed_handshakes_per_second; pacing accepts", nil, d)
				time.Sleep(d)
			}
		}
		c, err := ln.Accept()
		if err != nil {
			if a.Draining() {
				return nil
			}
			if outOfFDs(err) && a.shedOne(ln) {
				delay = 0
				continue
			}
			if !retryable(err) {
				return err
			}
			// Back off as net/http does: 5 ms doubling to 1 s, so a
			// persistent error costs no CPU.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			a.warn("accept failed; backing off", err, delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !a.admit() {
			a.refuse(c)
			continue
		}
		if !a.admitSource(c) {
			a.release()
			a.srcShed.Add(1)
			if a.RefuseSource != nil {
				a.shed.Add(1)
				_ = c.SetWriteDeadline(time.Now().Add(refuseTimeout))
				a.RefuseSource(c)
				_ = c.Close()
			} else {
				a.refuse(c)
			}
			continue
		}
		a.mu.Lock()
		if a.draining {
			a.mu.Unlock()
			a.releaseSource(c)
			a.release()
			_ = c.Close()
			continue
		}
		a.conns.Add(1)
		a.mu.Unlock()
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		go a.run(c, handle)
	}
}

// pacing returns the acceptor's pacing, made on first use; nil when off.
func (a *Acceptor) pacing() *pacing {
	a.paceOnce.Do(func() {
		n := a.FailedHandshakesPerSecond
		if n == 0 {
			n = DefaultFailedHandshakesPerSecond
		}
		if n > 0 {
			a.pace = newPacing(n)
		}
	})
	return a.pace
}

// HandshakeFailed reports a connection that failed its handshake: a
// protocol error, a frame too large, a timeout or a wrong secret before it
// was bound to a tenant. It counts towards FailedHandshakesPerSecond.
func (a *Acceptor) HandshakeFailed() {
	if p := a.pacing(); p != nil {
		p.failed()
	}
}

// Paced is the number of times the accept loop waited because
// connections failed their handshakes too fast.
func (a *Acceptor) Paced() int64 { return a.paced.Load() }

// admit takes a slot under both caps.
func (a *Acceptor) admit() bool {
	if n := a.open.Add(1); a.MaxConns > 0 && n > int64(a.MaxConns) {
		a.open.Add(-1)
		return false
	}
	if a.Budget != nil && !a.Budget.take() {
		a.open.Add(-1)
		return false
	}
	return true
}

func (a *Acceptor) release() {
	a.open.Add(-1)
	if a.Budget != nil {
		a.Budget.give()
	}
}

// sourceOf is c's peer address, unmapped (an IPv4 client of a dual-stack
// listener counts as itself); ok is false for a non-IP peer.
func sourceOf(c net.Conn) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// admitSource takes a slot of c's source under MaxConnsPerSource.
func (a *Acceptor) admitSource(c net.Conn) bool {
	if a.MaxConnsPerSource <= 0 {
		return true
	}
	src, ok := sourceOf(c)
	if !ok {
		return true
	}
	a.srcMu.Lock()
	defer a.srcMu.Unlock()
	if a.sources[src] >= a.MaxConnsPerSource {
		return false
	}
	if a.sources == nil {
		a.sources = map[netip.Addr]int{}
	}
	a.sources[src]++
	return true
}

func (a *Acceptor) releaseSource(c net.Conn) {
	if a.MaxConnsPerSource <= 0 {
		return
	}
	src, ok := sourceOf(c)
	if !ok {
		return
	}
	a.srcMu.Lock()
	if a.sources[src]--; a.sources[src] <= 0 {
		delete(a.sources, src)
	}
	a.srcMu.Unlock()
}

// Sources is the number of source addresses with connections open; it is
// counted only with MaxConnsPerSource set (else 0).
func (a *Acceptor) Sources() int {
	a.srcMu.Lock()
	defer a.srcMu.Unlock()
	return len(a.sources)
}

// RefusedPerSource is the number of connections refused since the start
// for being over MaxConnsPerSource (they count in Refused too).
func (a *Acceptor) RefusedPerSource() int64 { return a.srcShed.Load() }

// refuse tells a connection it will not be served, and closes it.
func (a *Acceptor) refuse(c net.Conn) {
	a.shed.Add(1)
	if a.Refuse != nil {
		_ = c.SetWriteDeadline(time.Now().Add(refuseTimeout))
		a.Refuse(c)
	}
	_ = c.Close()
}

// shedOne accepts one pending connection while the process is out of file
// descriptors, using the spare descriptor kept for this, refuses it and
// closes it: the client hears why at once instead of hanging in the
// backlog, and the loop does not spin on the same EMFILE. It reports
// whether a connection was shed.
func (a *Acceptor) shedOne(ln net.Listener) bool {
	a.warn("out of file descriptors; refusing new connections", nil, 0)
	return spare.shed(ln, a.refuse)
}

func (a *Acceptor) warn(msg string, err error, delay time.Duration) {
	if a.Log == nil {
		return
	}
	now := time.Now().UnixNano()
	last := a.lastWarn.Load()
	if now-last < int64(time.Second) || !a.lastWarn.CompareAndSwap(last, now) {
		return
	}
	attrs := []any{"open", a.open.Load(), "refused_total", a.shed.Load()}
	if err != nil {
		attrs = append(attrs, "error", err)
	}
	if delay > 0 {
		attrs = append(attrs, "retry_in", delay)
	}
	a.Log.Warn(msg, attrs...)
}

// run runs a connection's handler, first or resumed, and cleans up after
// it unless it parked the connection.
func (a *Acceptor) run(c net.Conn, handle func(net.Conn) bool) {
	parked := false
	defer func() {
		if r := recover(); r != nil {
			parked = false
			if a.Log != nil {
				a.Log.Error("connection panic", "panic", r, "remote", c.RemoteAddr().String())
			}
		}
		if !parked {
			_ = c.Close()
			a.releaseSource(c)
			a.release()
			a.conns.Done()
		}
	}()
	parked = handle(c)
}

// Park hands c, whose handler has nothing to do until the peer sends more,
// to one goroutine that watches every parked connection: resume runs (in
// a new goroutine, as handle did) once c is readable, or at Wake. It
// reports false, parking nothing, where it cannot park (a TLS connection,
// no epoll): the handler then keeps waiting itself. After true the
// handler must return true at once and leave c alone. An idle connection
// parked costs its session state and no goroutine or buffer.
func (a *Acceptor) Park(c net.Conn, resume func(net.Conn) bool) bool {
	if a.Draining() {
		return false
	}
	return a.park(c, resume)
}

// Wake resumes c's handler now if c is parked, e.g. to end its session.
func (a *Acceptor) Wake(c net.Conn) { a.wake(c) }

// Open is the number of connections being served.
func (a *Acceptor) Open() int { return int(a.open.Load()) }

// Refused is the number of connections refused since the start: over a
// cap, or shed while out of file descriptors.
func (a *Acceptor) Refused() int64 { return a.shed.Load() }

// Drain closes the listeners; connections already accepted go on. It
// reports whether this call started the drain.
func (a *Acceptor) Drain() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.draining {
		return false
	}
	a.draining = true
	for ln := range a.listeners {
		_ = ln.Close()
	}
	return true
}

// Draining reports whether Drain was called.
func (a *Acceptor) Draining() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.draining
}

// Listening reports whether the acceptor serves at least one listener and
// is not draining.
func (a *Acceptor) Listening() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.draining && len(a.listeners) > 0
}

// Wait blocks until every connection has finished (parked ones included:
// Drain's caller wakes them to end their sessions), then stops the
// parking loop.
func (a *Acceptor) Wait() {
	a.conns.Wait()
	a.stopParker()
}

// outOfFDs reports whether an accept failed for want of a file descriptor
// (the process's or the system's limit).
func outOfFDs(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// retryable reports whether an accept error is transient: the listener
// is fine and a later accept can succeed (out of descriptors or memory, a
// connection aborted before it was accepted, a timeout).
func retryable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
