package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// nearCacheConns are the near cache's two upstream connections: fill,
// where misses and writes to cacheable keys go (in RESP2, with CLIENT
// TRACKING on REDIRECT to inv), and inv, subscribed to
// __redis__:invalidate, where redis-server reports the keys read on fill
// that changed since. They are dialled together on first use and again
// after either is lost; losing either flushes the cache.
type nearCacheConns struct {
	mu        sync.Mutex // one dial at a time; guards the fields
	fill      *upConn
	inv       *upConn
	closed    bool
	retryAt   time.Time // after a failed dial, no other before this
	invalDone chan struct{}
}

// nearCacheRetry is how long after a failed dial misses go the usual way
// without trying again.
const nearCacheRetry = time.Second

var errNearCacheDown = errors.New("near cache connections unavailable")

// invalidationChannel is where redis-server publishes invalidations for a
// RESP2 REDIRECT client (client-side caching, "Two connections mode").
const invalidationChannel = "__redis__:invalidate"

// conn returns the fill connection, dialling both if needed. An error
// means the command goes the usual way, uncached.
func (nc *nearCache) conn(ctx context.Context) (*upConn, error) {
	c := &nc.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fill != nil {
		return c.fill, nil
	}
	if c.closed || time.Now().Before(c.retryAt) || nc.srv.acc.Draining() {
		return nil, errNearCacheDown
	}
	fill, inv, err := nc.dial(ctx)
	if err != nil {
		c.retryAt = time.Now().Add(nearCacheRetry)
		nc.srv.log.Warn("redis near cache: tracking connections unavailable; reads go upstream uncached", "error", err)
		return nil, err
	}
	c.fill, c.inv = fill, inv
	c.invalDone = make(chan struct{})
	// Nothing stored before (there is nothing, or it was flushed when the
	// last connections went) is served; from now on fills are stored.
	nc.flush(true)
	fill.near = nc
	nc.srv.startReader(fill)
	done := c.invalDone
	go func() {
		defer close(done)
		defer inv.conn.Close()
		nc.readInvalidations(inv)
	}()
	return fill, nil
}

// dial sets up the invalidation connection, then the fill connection
// tracked with REDIRECT to it.
func (nc *nearCache) dial(ctx context.Context) (fill, inv *upConn, err error) {
	srv := nc.srv
	inv, err = srv.dialUpstream(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(srv.cfg.ConnectTimeout)
	_ = inv.conn.SetDeadline(deadline)
	id, err := syncCommand(inv, "CLIENT", "ID")
	if err == nil {
		_, err = syncCommand(inv, "SUBSCRIBE", invalidationChannel)
	}
	if err != nil {
		inv.closeNoReader()
		return nil, nil, fmt.Errorf("invalidation connection: %w", err)
	}
	_ = inv.conn.SetDeadline(time.Time{})
	fill, err = srv.dialUpstream(ctx, false)
	if err != nil {
		inv.closeNoReader()
		return nil, nil, err
	}
	_ = fill.conn.SetDeadline(deadline)
	if _, err = syncCommand(fill, "CLIENT", "TRACKING", "on", "REDIRECT", id); err != nil {
		inv.closeNoReader()
		fill.closeNoReader()
		return nil, nil, fmt.Errorf("CLIENT TRACKING: %w", err)
	}
	_ = fill.conn.SetDeadline(time.Time{})
	fill.fills = &fifo[*fillToken]{}
	return fill, inv, nil
}

// syncCommand runs one command on a connection nobody reads yet and
// returns its reply's text (an integer's digits, a status, the first
// element of an array).
func syncCommand(u *upConn, args ...string) (string, error) {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	if _, err := u.conn.Write(resp.AppendCommand(nil, bs)); err != nil {
		return "", err
	}
	rep, err := u.rr.ReadReply()
	if err != nil {
		return "", err
	}
	v := rep.Root()
	switch v.Type() {
	case resp.TypeSimpleError:
		return "", errors.New(string(v.Bytes()))
	case resp.TypeInteger:
		n, _ := v.Int()
		return strconv.FormatInt(n, 10), nil
	case resp.TypeArray:
		if v.Len() > 0 {
			return string(v.Index(0).Bytes()), nil
		}
		return "", nil
	}
	return string(v.Bytes()), nil
}

// readInvalidations evicts the keys redis-server reports until the
// connection ends; then the cache is flushed and both connections closed.
func (nc *nearCache) readInvalidations(inv *upConn) {
	for {
		rep, err := inv.rr.ReadReply()
		if err != nil {
			nc.lost(inv, err)
			return
		}
		v := rep.Root()
		// ["message", "__redis__:invalidate", [key...] or null]
		if v.Type() != resp.TypeArray || v.Len() != 3 || string(v.Index(0).Bytes()) != "message" {
			continue
		}
		keys := v.Index(2)
		if keys.IsNull() || !keys.IsAggregate() {
			// FLUSHALL, FLUSHDB, or a payload not understood: everything.
			nc.flush(true)
			continue
		}
		nc.mu.Lock()
		for i, n := 0, keys.Len(); i < n; i++ {
			nc.invalidateLocked(keys.Index(i).Bytes())
		}
		nc.mu.Unlock()
		inv.rr.Shrink()
	}
}

// lost handles the end of either connection: the other is closed, the
// cache flushed and not served until both are dialled again.
func (nc *nearCache) lost(u *upConn, err error) {
	c := &nc.conns
	c.mu.Lock()
	if u != c.fill && u != c.inv {
		c.mu.Unlock()
		return
	}
	fill, inv, closed := c.fill, c.inv, c.closed
	c.fill, c.inv = nil, nil
	nc.flush(false)
	c.mu.Unlock()
	if !closed {
		nc.srv.log.Warn("redis near cache: a tracking connection was lost; the cache is flushed", "error", err)
	}
	if fill != nil {
		fill.close()
	}
	if inv != nil {
		inv.kill()
	}
}

// close ends both connections for good and waits for the invalidation
// reader.
func (c *nearCacheConns) close() {
	c.mu.Lock()
	c.closed = true
	fill, inv, done := c.fill, c.inv, c.invalDone
	c.mu.Unlock()
	if fill != nil {
		fill.close()
	}
	if inv != nil {
		inv.kill()
	}
	if done != nil {
		<-done
	}
}

// killTracking ends the connections as a network failure would (tests).
func (nc *nearCache) killTracking() {
	c := &nc.conns
	c.mu.Lock()
	inv := c.inv
	c.mu.Unlock()
	if inv != nil {
		inv.kill()
	}
}
