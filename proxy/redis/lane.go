package redis

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Which shared upstream connection a client's commands go to.
//
// Fewer shared connections mean bigger batches: redis-server reads and
// answers the commands of many clients in one read and one write, and
// the loop writes them in one write(2) (bench/RESULTS.md, "Redis:
// shared_connections 1, 2 and 4": one connection gave 1.13-1.18 × the
// requests per second of four, unpipelined, at 0.85 × the CPU). But
// replies come back in order on a connection, so a large reply delays
// every reply queued behind it, of every tenant.
//
// So the shared connections are lanes. The first is for small commands
// and replies: every client uses it while its tenant is light. A tenant
// that sends or is sent something of bulkBytes or more is bulky for
// bulkFor after the last time it did; its clients use the other
// connections, spread by client id (with one shared connection, it too).
// A client changes lanes only when it is owed no reply, so its replies
// stay in order; until then it stays where it is.

const (
	// bulkBytes is the size of a command or reply that makes its
	// tenant bulky. redis-benchmark's largest default reply (LRANGE_600)
	// is about 5 KiB.
	bulkBytes = 16 << 10
	// bulkFor is how long a tenant stays bulky after its last large
	// command or reply.
	bulkFor = 10 * time.Second
)

// tenantLoad is what the proxy knows of a tenant's traffic, shared by
// its clients.
type tenantLoad struct {
	bulkUntil atomic.Int64 // Unix nanoseconds; 0: never bulky
	turned    prometheus.Counter
}

// markBulk notes a large command or reply of the tenant's.
func (t *tenantLoad) markBulk() {
	now := time.Now()
	if prev := t.bulkUntil.Swap(now.Add(bulkFor).UnixNano()); now.UnixNano() >= prev {
		t.turned.Inc()
	}
}

// bulky reports whether the tenant sent or was sent something large in
// the last bulkFor.
func (t *tenantLoad) bulky() bool {
	until := t.bulkUntil.Load()
	if until == 0 {
		return false
	}
	if time.Now().UnixNano() < until {
		return true
	}
	t.bulkUntil.CompareAndSwap(until, 0) // light again: no clock read per command
	return false
}

// lane is the index of the shared connection the client's commands go
// to now.
func (s *clientConn) lane() int {
	n := len(s.be.sharedUp)
	if n == 1 || s.load == nil || !s.load.bulky() {
		return 0
	}
	return 1 + int(s.id%int64(n-1))
}

// openShared returns the shared connection i if it is open.
func (srv *Server) openShared(i int) *upConn { return srv.sharedUp[i].Load() }

// owesNothing reports whether every reply the client was owed has been
// delivered to it.
func (s *clientConn) owesNothing() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.outq.len() == 0
}

// sharedConn returns the shared connection for the client's next
// command: the one it is on while it is owed replies, else its lane's,
// dialled if needed (when that fails, the one it is on, if any).
func (s *clientConn) sharedConn(ctx context.Context) (*upConn, error) {
	i := s.lane()
	u := s.be.openShared(i)
	if u != nil && u == s.up {
		return u, nil // on its lane already: the usual case, no lock taken
	}
	idle := s.owesNothing()
	if s.up != nil && !idle {
		return s.up, nil
	}
	if u == nil {
		var err error
		if u, err = s.be.shared(ctx, i); err != nil {
			if s.up != nil {
				return s.up, nil
			}
			return nil, err
		}
	}
	if idle {
		s.via = u // nothing is owed where it was: no wait for that connection
	}
	s.up = u
	return u, nil
}
