package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Fault is what a Relay does to the bytes and connections it carries.
type Fault int

// The faults a Relay injects. Each applies at once to the connections open
// when it is set and to those accepted afterwards, until another is set.
const (
	// Pass forwards bytes both ways, as if the relay were not there.
	Pass Fault = iota
	// Delay forwards each chunk read after the relay's delay (SetDelay).
	Delay
	// Stall forwards nothing and dials nothing: bytes wait in the relay
	// and the kernel's buffers, and flow again when the fault is lifted. A
	// connection accepted meanwhile is neither answered nor refused. An
	// upstream that hangs (a stopped process, a full disk) looks like this.
	Stall
	// Blackhole drops every byte either way, for good, and answers no new
	// connection: a network path that loses every packet. Bytes dropped
	// are not delivered when the fault is lifted.
	Blackhole
	// Reset closes every connection with a TCP reset (SO_LINGER 0), and
	// resets each new one as soon as it is accepted: an upstream that
	// crashed, or a firewall that rejects.
	Reset
	// HalfClose sends the client side a FIN (the upstream "finished
	// writing") while still reading from it; new connections get the FIN
	// at once. An upstream that shuts its side down mid-conversation.
	HalfClose
)

var faultNames = [...]string{"pass", "delay", "stall", "blackhole", "reset", "half-close"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Relay is a TCP relay on 127.0.0.1 between a client (the sidecar) and a
// target (PostgreSQL, redis-server) that injects faults switched at run
// time: point the sidecar's upstream address at Addr and call SetFault.
// Its goroutines (the accept loop and two pumps per connection) stop at
// Close, which waits for them.
type Relay struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cond   *sync.Cond // broadcast when the fault changes or the relay closes
	fault  Fault
	delay  time.Duration
	closed bool
	pairs  map[*relayPair]struct{}
	wg     sync.WaitGroup
}

// relayPair is one relayed connection: the client's and the target's.
type relayPair struct {
	client     net.Conn
	mu         sync.Mutex
	server     net.Conn // nil until dialled
	halfClosed bool     // guarded by Relay.mu
}

// NewRelay starts a relay to target, closed when the test ends.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	r, err := StartRelay(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// StartRelay starts a relay to target on a free loopback port; the caller
// closes it.
func StartRelay(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay: listen: %w", err)
	}
	r := &Relay{ln: ln, target: target, pairs: map[*relayPair]struct{}{}}
	r.cond = sync.NewCond(&r.mu)
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// Addr is the relay's address, host:port.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Port is the relay's port.
func (r *Relay) Port() int { return r.ln.Addr().(*net.TCPAddr).Port }

// SetDelay sets the delay of the Delay fault.
func (r *Relay) SetDelay(d time.Duration) {
	r.mu.Lock()
	r.delay = d
	r.mu.Unlock()
}

// SetFault switches the relay to f, for the connections open now and
// those to come.
func (r *Relay) SetFault(f Fault) {
	r.mu.Lock()
	r.fault = f
	var reset []*relayPair
	for p := range r.pairs {
		switch f {
		case Reset:
			reset = append(reset, p)
		case HalfClose:
			r.halfCloseLocked(p)
		}
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	for _, p := range reset {
		p.reset()
	}
}

// Fault is the fault in force.
func (r *Relay) Fault() Fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fault
}

// Conns is the number of relayed connections open.
func (r *Relay) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pairs)
}

// Close stops accepting, closes every connection and waits for the
// relay's goroutines.
func (r *Relay) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	_ = r.ln.Close()
	for p := range r.pairs {
		p.close()
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Relay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		p := &relayPair{client: c}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			_ = c.Close()
			return
		}
		r.pairs[p] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go r.serve(p)
	}
}

// serve dials the target once the fault lets it, then pumps both ways.
func (r *Relay) serve(p *relayPair) {
	defer r.wg.Done()
	defer r.forget(p)
	r.mu.Lock()
	for {
		switch {
		case r.closed:
			r.mu.Unlock()
			return
		case r.fault == Reset:
			r.mu.Unlock()
			p.reset()
			return
		case r.fault == Stall || r.fault == Blackhole:
			r.cond.Wait() // neither answered nor refused
			continue
		}
		break
	}
	r.mu.Unlock()
	s, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		p.reset()
		return
	}
	r.mu.Lock()
	p.mu.Lock()
	p.server = s
	p.mu.Unlock()
	if r.closed {
		r.mu.Unlock()
		p.close()
		return
	}
	if r.fault == HalfClose {
		r.halfCloseLocked(p)
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.pump(p, s, p.client, true)
	}()
	r.pump(p, p.client, s, false)
	<-done
}

// pump copies src to dst under the fault in force; toClient says which way.
func (r *Relay) pump(p *relayPair, dst, src net.Conn, toClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !r.forward(p, dst, buf[:n], toClient) {
			p.close()
			return
		}
		if err != nil {
			if !toClient && errors.Is(err, io.EOF) {
				// The client finished writing: pass the FIN on and let
				// the target's side run until the target closes.
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				return
			}
			p.close() // any other end ends both sides
			return
		}
	}
}

// forward writes b to dst once the fault allows; false ends the pump.
func (r *Relay) forward(p *relayPair, dst net.Conn, b []byte, toClient bool) bool {
	r.mu.Lock()
	for {
		switch {
		case r.closed:
			r.mu.Unlock()
			return false
		case r.fault == Stall:
			r.cond.Wait()
			continue
		case r.fault == Blackhole:
			r.mu.Unlock()
			return true // dropped
		case r.fault == Reset:
			r.mu.Unlock()
			p.reset()
			return false
		case r.fault == HalfClose && toClient:
			r.mu.Unlock()
			return true // its side is shut: dropped
		}
		break
	}
	d := time.Duration(0)
	if r.fault == Delay {
		d = r.delay
	}
	r.mu.Unlock()
	if d > 0 {
		time.Sleep(d) // the fault itself, not synchronisation
	}
	_, err := dst.Write(b)
	return err == nil
}

func (r *Relay) halfCloseLocked(p *relayPair) {
	if p.halfClosed {
		return
	}
	p.halfClosed = true
	if tc, ok := p.client.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (r *Relay) forget(p *relayPair) {
	r.mu.Lock()
	delete(r.pairs, p)
	r.mu.Unlock()
	p.close()
}

func (p *relayPair) close() {
	_ = p.client.Close()
	if s := p.serverConn(); s != nil {
		_ = s.Close()
	}
}

func (p *relayPair) serverConn() net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.server
}

// reset closes both sides with a TCP reset.
func (p *relayPair) reset() {
	for _, c := range []net.Conn{p.client, p.serverConn()} {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		if c != nil {
			_ = c.Close()
		}
	}
}
