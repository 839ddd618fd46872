// Package netserve runs the accept loops of the data-plane listeners: it
// owns the listeners and one goroutine per connection, backs off on
// temporary accept errors as net/http does, recovers a panicking
// connection, and stops accepting and waits for connections on shutdown.
package netserve

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Acceptor tracks a server's listeners and connection goroutines.
type Acceptor struct {
	// Log receives panics of connection handlers.
	Log *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	draining  bool
	conns     sync.WaitGroup
}

// Serve accepts connections on ln and runs handle for each in its own
// goroutine, until Drain. It returns nil after Drain.
func (a *Acceptor) Serve(ln net.Listener, handle func(net.Conn)) error {
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
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if a.Draining() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				time.Sleep(delay) // accept backoff, as net/http does
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 0
		a.mu.Lock()
		if a.draining {
			a.mu.Unlock()
			_ = c.Close()
			continue
		}
		a.conns.Add(1)
		a.mu.Unlock()
		go a.run(c, handle)
	}
}

func (a *Acceptor) run(c net.Conn, handle func(net.Conn)) {
	defer a.conns.Done()
	defer c.Close()
	defer func() {
		if r := recover(); r != nil && a.Log != nil {
			a.Log.Error("connection panic", "panic", r, "remote", c.RemoteAddr().String())
		}
	}()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	handle(c)
}

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

// Wait blocks until every connection handler has returned.
func (a *Acceptor) Wait() { a.conns.Wait() }
