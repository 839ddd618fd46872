//go:build linux

// Command pgloop is an experiment, not a product: the least a Go proxy in
// PostgreSQL transaction pooling can do per transaction, served from one
// goroutine over an epoll set of its own (level-triggered), as PgBouncer
// serves everything from one thread. It answers any startup without
// authentication, forwards every client message to a pooled server
// connection attached at the client's first message and released at the
// ReadyForQuery that ends the transaction, and inspects nothing else: no
// firewall, no binding, no metrics. bench/pgbench runs it beside
// tenantguard and PgBouncer (-loop) to show what the data plane's
// goroutine-per-connection design costs against an event loop in the same
// language: system calls and CPU per transaction. Both modes read and
// write their sockets with raw system calls (internal/rawio), as the data
// plane does; the loop's blocking epoll_wait stays an ordinary one. Both
// run on one processor unless GOMAXPROCS says otherwise, as the sidecar
// does by default (`procs`).
//
//	go run ./bench/pgloop -listen 127.0.0.1:6433 -upstream postgres://u:p@127.0.0.1:5432/db -pool 20
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/internal/rawio"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:6433", "address to listen on")
	upstream := flag.String("upstream", "", "PostgreSQL URL of the pooled connections")
	pool := flag.Int("pool", 20, "server connections")
	mode := flag.String("mode", "loop", "loop: one goroutine on an epoll set of its own; goroutines: a goroutine per client and per server connection, as the data plane")
	flag.Parse()
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if *upstream == "" {
		log.Fatal("pgloop: -upstream is required")
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}()
	if *mode == "goroutines" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("pgloop (goroutines): listening on", ln.Addr())
		serveGoroutines(context.Background(), ln, *upstream, *pool)
		return
	}
	if *mode != "loop" {
		log.Fatalf("pgloop: -mode %q: want loop or goroutines", *mode)
	}
	l, err := newLoop()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for range *pool {
		fd, err := dialServer(ctx, *upstream)
		if err != nil {
			log.Fatalf("pgloop: %v", err)
		}
		l.addServer(fd)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	go l.run()
	fmt.Println("pgloop: listening on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			fd, err := startup(c)
			if err != nil {
				return
			}
			l.addClient(fd)
		}()
	}
}

// dialServer opens one authenticated server connection and returns a
// duplicate of its descriptor, non-blocking, outside Go's netpoller.
func dialServer(ctx context.Context, url string) (int, error) {
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		return -1, err
	}
	hj, err := pc.Hijack()
	if err != nil {
		return -1, err
	}
	return takeFD(hj.Conn)
}

// takeFD duplicates c's descriptor and closes c: the duplicate shares the
// open file (non-blocking) and is the loop's alone.
func takeFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		c.Close()
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		c.Close()
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = syscall.Dup(int(fd)) }); err != nil {
		derr = err
	}
	c.Close()
	if derr != nil {
		return -1, derr
	}
	return nfd, syscall.SetNonblock(nfd, true)
}

// startup answers the client's startup and hands its descriptor over.
func startup(c net.Conn) (int, error) {
	if err := answerStartup(c); err != nil {
		c.Close()
		return -1, err
	}
	return takeFD(c)
}

// answerStartup reads the client's startup packet (refusing SSL and GSS
// encryption) and answers as a server that needs no password. Nothing
// follows a startup before its ReadyForQuery, so the backend's reader
// holds no byte of the client's when this returns.
func answerStartup(c net.Conn) error {
	be := pgproto3.NewBackend(c, c)
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return err
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case *pgproto3.StartupMessage:
		default:
			return fmt.Errorf("unexpected startup message %T", msg)
		}
		break
	}
	be.Send(&pgproto3.AuthenticationOk{})
	for _, kv := range [][2]string{{"server_version", "15.0"}, {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"}, {"integer_datetimes", "on"}, {"standard_conforming_strings", "on"}} {
		be.Send(&pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]})
	}
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return be.Flush()
}

// peer is a client or a server connection.
type peer struct {
	fd      int
	server  bool
	in      []byte // bytes read, not yet consumed
	out     []byte // bytes to write at the round's end
	other   *peer  // the attached server (of a client) or client (of a server)
	dirty   bool
	waiting bool // a client with messages and no server
	closing bool
	// A server's scan of its replies: the header bytes of the message
	// begun, the rest of its body to pass over, and the requests (Query,
	// Sync) still owed a ReadyForQuery.
	hdr     [6]byte
	nhdr    int
	skip    int
	pending int
}

// loop is one goroutine serving every socket.
type loop struct {
	epfd   int
	mu     sync.Mutex // guards adds from other goroutines
	added  []*peer
	wakeR  int
	wakeW  int
	peers  map[int]*peer
	idle   []*peer // servers with no client
	queue  []*peer // clients waiting for a server
	dirty  []*peer
	events [256]syscall.EpollEvent
	buf    [64 << 10]byte
}

func newLoop() (*loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, err
	}
	l := &loop{epfd: epfd, wakeR: p[0], wakeW: p[1], peers: map[int]*peer{}}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p[0], &ev); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *loop) addServer(fd int) { l.add(&peer{fd: fd, server: true}) }
func (l *loop) addClient(fd int) { l.add(&peer{fd: fd}) }

func (l *loop) add(p *peer) {
	l.mu.Lock()
	l.added = append(l.added, p)
	l.mu.Unlock()
	_, _ = syscall.Write(l.wakeW, []byte{0})
}

func (l *loop) takeAdded() {
	var b [64]byte
	for {
		if n, _ := syscall.Read(l.wakeR, b[:]); n <= 0 {
			break
		}
	}
	l.mu.Lock()
	added := l.added
	l.added = nil
	l.mu.Unlock()
	for _, p := range added {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(p.fd)}
		if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, p.fd, &ev); err != nil {
			syscall.Close(p.fd)
			continue
		}
		l.peers[p.fd] = p
		if p.server {
			l.idle = append(l.idle, p)
		}
	}
}

// run waits in epoll_wait directly: the loop's thread blocks in the
// kernel, with no netpoller between.
func (l *loop) run() {
	for {
		n, err := syscall.EpollWait(l.epfd, l.events[:], -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			log.Fatal(err)
		}
		for i := 0; i < n; i++ {
			fd := int(l.events[i].Fd)
			if fd == l.wakeR {
				l.takeAdded()
				continue
			}
			if p := l.peers[fd]; p != nil {
				l.serve(p)
			}
		}
		l.flush()
	}
}

// serve reads p once and moves what it read along.
func (l *loop) serve(p *peer) {
	n, err := rawio.Read(p.fd, l.buf[:])
	if n <= 0 {
		if err == syscall.EAGAIN {
			return
		}
		l.drop(p)
		return
	}
	if p.server {
		l.fromServer(p, l.buf[:n])
		return
	}
	p.in = append(p.in, l.buf[:n]...)
	l.fromClient(p)
}

// fromClient sends a client's complete messages to its server, attaching
// one first.
func (l *loop) fromClient(c *peer) {
	end := completeMessages(c.in)
	if end == 0 {
		return
	}
	if c.in[0] == 'X' && c.other == nil {
		l.drop(c)
		return
	}
	if c.other == nil {
		if len(l.idle) == 0 {
			if !c.waiting {
				c.waiting = true
				l.queue = append(l.queue, c)
			}
			return
		}
		s := l.idle[len(l.idle)-1]
		l.idle = l.idle[:len(l.idle)-1]
		c.other, s.other = s, c
	}
	s := c.other
	for m := c.in[:end]; len(m) > 0; {
		if m[0] == 'Q' || m[0] == 'S' {
			s.pending++
		}
		m = m[1+int(binary.BigEndian.Uint32(m[1:5])):]
	}
	s.out = append(s.out, c.in[:end]...)
	c.in = append(c.in[:0], c.in[end:]...)
	l.mark(s)
}

// fromServer forwards a server's bytes to its client and releases the
// server at the ReadyForQuery that answers the client's last request, if
// it says the server is outside a transaction.
func (l *loop) fromServer(s *peer, b []byte) {
	c := s.other
	if c == nil {
		return // a notice on an idle connection: dropped
	}
	c.out = append(c.out, b...)
	l.mark(c)
	idle := false
	for len(b) > 0 {
		if s.skip > 0 {
			k := min(s.skip, len(b))
			s.skip -= k
			b = b[k:]
			continue
		}
		need := 5
		if s.nhdr > 0 && s.hdr[0] == 'Z' {
			need = 6
		}
		k := copy(s.hdr[s.nhdr:need], b)
		s.nhdr += k
		b = b[k:]
		if s.nhdr < need {
			continue
		}
		if s.hdr[0] == 'Z' && need == 5 {
			continue // and the status byte
		}
		ln := int(binary.BigEndian.Uint32(s.hdr[1:5]))
		s.nhdr = 0
		if s.hdr[0] == 'Z' {
			s.skip = ln - 5
			s.pending--
			idle = s.pending == 0 && s.hdr[5] == 'I'
		} else {
			s.skip = ln - 4
			idle = false
		}
	}
	if idle && s.skip == 0 && s.nhdr == 0 {
		c.other, s.other = nil, nil
		l.release(s)
	}
}

// release gives a server to the first waiting client, or back to the pool.
func (l *loop) release(s *peer) {
	for len(l.queue) > 0 {
		c := l.queue[0]
		l.queue = l.queue[1:]
		c.waiting = false
		if c.closing {
			continue
		}
		l.idle = append(l.idle, s)
		l.fromClient(c)
		return
	}
	l.idle = append(l.idle, s)
}

// completeMessages returns the length of the complete messages at the
// start of b.
func completeMessages(b []byte) int {
	end := 0
	for len(b)-end >= 5 {
		ln := int(binary.BigEndian.Uint32(b[end+1 : end+5]))
		if len(b)-end < 1+ln {
			break
		}
		end += 1 + ln
	}
	return end
}

func (l *loop) mark(p *peer) {
	if !p.dirty {
		p.dirty = true
		l.dirty = append(l.dirty, p)
	}
}

// flush writes every buffer filled in this round, one write each.
func (l *loop) flush() {
	for i, p := range l.dirty {
		p.dirty = false
		l.dirty[i] = nil
		for len(p.out) > 0 && !p.closing {
			n, err := rawio.Write(p.fd, p.out)
			if err == syscall.EAGAIN {
				continue // an experiment: spin rather than track EPOLLOUT
			}
			if n <= 0 {
				l.drop(p)
				break
			}
			p.out = p.out[n:]
		}
		p.out = p.out[:0:cap(p.out)]
	}
	l.dirty = l.dirty[:0]
}

// drop closes a peer; a client's server goes back only if idle-clean,
// which an experiment does not check: it is closed with it.
func (l *loop) drop(p *peer) {
	if p.closing {
		return
	}
	p.closing = true
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, p.fd, nil)
	delete(l.peers, p.fd)
	syscall.Close(p.fd)
	if o := p.other; o != nil {
		o.other = nil
		if p.server {
			l.drop(o)
		} else {
			l.drop(o) // mid-transaction: the server's state is unknown
		}
	}
}
