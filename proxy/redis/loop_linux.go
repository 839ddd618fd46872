//go:build linux

package redis

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/tenantguard/tenantguard/internal/rawio"
)

// loop serves the connections of clients on the fast path, and
// the shared upstream connections, from one goroutine, as twemproxy serves
// all of its connections from one thread.
//
// Its sockets are in an epoll instance of its own, level-triggered. The
// loop takes every socket that is ready and reads each once: a client's
// commands are run, an upstream connection's replies are delivered to
// their clients. Only then does it write: each upstream connection the
// round's commands went to gets them all in one write(2), and each client
// its replies in one. A goroutine per connection would wake for each
// command and each reply, and write them one by one.
//
// The epoll descriptor is itself waited on through Go's netpoller (it is
// readable while it has events), so an idle loop is a parked goroutine,
// not a thread blocked in epoll_wait.
//
// A client is the loop's from the moment it registers its socket (join)
// until the loop hands it back to its own goroutine (handBack), which
// meanwhile waits on s.wake. The loop runs only commands that cannot wait
// (clientConn.needsHome): anything that dials, waits for replies, or
// authenticates goes back to the client's goroutine with the command,
// and the client joins again once its input is used up. A shared
// upstream connection is the loop's from its dial to its end.
type loop struct {
	srv    *Server
	epfd   int
	file   *os.File // epfd, for the netpoller
	rc     syscall.RawConn
	waitFn func(fd uintptr) bool // l.wait, bound once
	nev    int
	events [128]syscall.EpollEvent

	// table holds the sockets the loop owns, by the index in their epoll
	// event; gen tells a stale event (of a socket gone since) from a
	// current one. Clients join from their own goroutines.
	mu    sync.Mutex
	table []loopEntry
	free  []int32
	gen   uint32

	dirtyUp []*upConn     // written to in this round: flush at its end
	dirtyS  []*clientConn // with replies to write
	done    chan struct{}
}

// loopEntry is a client connection or a shared upstream connection.
type loopEntry struct {
	gen uint32
	s   *clientConn
	u   *upConn
}

// newLoop starts a loop.
func newLoop(srv *Server) (*loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "redis-loop-epoll") // non-blocking: the netpoller waits for it
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	l := &loop{srv: srv, epfd: epfd, file: f, rc: rc, done: make(chan struct{})}
	l.waitFn = l.wait
	go l.run()
	return l, nil
}

// stop ends the loop once no client is registered, and waits for it.
func (l *loop) stop() {
	_ = l.file.Close()
	<-l.done
}

func (l *loop) run() {
	defer close(l.done)
	for {
		if err := l.rc.Read(l.waitFn); err != nil {
			return // the descriptor was closed: stop
		}
		for i := 0; i < l.nev; i++ {
			l.event(&l.events[i])
		}
		l.flush()
	}
}

// wait takes the events ready now; with none, the netpoller parks the
// loop until the epoll descriptor is readable.
func (l *loop) wait(fd uintptr) bool {
	n, err := rawio.EpollPoll(int(fd), l.events[:])
	if err == syscall.EINTR {
		n, err = 0, nil
	}
	l.nev = max(n, 0)
	return n > 0 || err != nil
}

func (l *loop) event(ev *syscall.EpollEvent) {
	var e loopEntry
	l.mu.Lock()
	if i := int(ev.Fd); i < len(l.table) && l.table[i].gen == uint32(ev.Pad) {
		e = l.table[i] // else handed back (or gone) since the event
	}
	l.mu.Unlock()
	switch {
	case e.s != nil:
		l.serve(e.s)
	case e.u != nil:
		l.serveUp(e.u)
	}
}

// serve reads the client's socket once and runs the commands read.
func (l *loop) serve(s *clientConn) {
	s.crd.budget = readsPerEvent
	for {
		cmd, err := s.rd.ReadCommand()
		if err == errWouldBlock {
			break
		}
		if err != nil {
			l.handBack(s, handoff{err: err})
			return
		}
		if len(cmd.Args) == 0 {
			continue
		}
		err = s.handle(context.Background(), cmd.Args, true)
		if err == errNeedHome {
			l.handBack(s, handoff{args: cmd.Args})
			return
		}
		if err != nil {
			l.handBack(s, handoff{err: err})
			return
		}
		if s.gone.Load() {
			l.handBack(s, handoff{err: errClientCut})
			return
		}
	}
	l.dirty(s)
}

// dirty notes what serving s left to write at the round's end.
func (l *loop) dirty(s *clientConn) {
	if u := s.up; u != nil && !u.loopDirty {
		u.loopDirty = true
		l.dirtyUp = append(l.dirtyUp, u)
	}
	l.dirtyClient(s)
}

func (l *loop) dirtyClient(s *clientConn) {
	if !s.loopDirty {
		s.loopDirty = true
		l.dirtyS = append(l.dirtyS, s)
	}
}

// serveUp reads a shared upstream connection once and delivers the
// replies read; their clients are written to at the round's end.
func (l *loop) serveUp(u *upConn) {
	u.urd.budget = readsPerEvent
	for {
		rep, err := u.rr.ReadReply()
		if err == errWouldBlock {
			break
		}
		if err == nil {
			var s *clientConn
			if s, err = u.route(rep); err == nil {
				l.dirtyClient(s)
				continue
			}
		}
		l.leave(u.sock, u.loopSlot)
		u.fail(err)
		return
	}
	if u.rr.Buffered() == 0 {
		u.rr.Shrink() // between batches: a run of large replies reuses the grown buffer
	}
}

// flush ends a round: every upstream connection written to sends what it
// was given, then the proxy's own replies go out.
func (l *loop) flush() {
	for i, u := range l.dirtyUp {
		u.loopDirty = false
		_ = u.flush() // a failed write fails the replies owed (upConn.abort)
		l.dirtyUp[i] = nil
	}
	l.dirtyUp = l.dirtyUp[:0]
	for i, s := range l.dirtyS {
		s.loopDirty = false
		s.flushClient()
		l.dirtyS[i] = nil
	}
	l.dirtyS = l.dirtyS[:0]
}

// join makes the loop serve s, from the client's goroutine, which then
// waits on s.wake. It reports false when the socket could not be
// registered; the client goes on serving itself.
func (l *loop) join(s *clientConn) bool {
	return l.enter(s.sock, loopEntry{s: s}, func(i int32) { s.loopSlot, s.crd.loop = i, true })
}

// joinUp makes the loop read the shared upstream connection u, just
// dialled, for the rest of its life. It reports false when the socket
// could not be registered; u then needs a readLoop.
func (l *loop) joinUp(u *upConn) bool {
	return l.enter(u.sock, loopEntry{u: u}, func(i int32) { u.loopSlot, u.urd.loop = i, true })
}

// handBack returns s to its goroutine with what it must do next.
func (l *loop) handBack(s *clientConn, h handoff) {
	l.leave(s.sock, s.loopSlot)
	s.wake <- h
}

// enter registers sk for e in a free slot; mark (run under l.mu, so that
// it happens before the loop serves e) records the slot and switches e's
// reads to the loop.
func (l *loop) enter(sk *sock, e loopEntry, mark func(slot int32)) bool {
	if sk == nil {
		return false
	}
	l.mu.Lock()
	var i int32
	if n := len(l.free); n > 0 {
		i, l.free = l.free[n-1], l.free[:n-1]
	} else {
		i = int32(len(l.table))
		l.table = append(l.table, loopEntry{})
	}
	l.gen++
	e.gen = l.gen
	l.table[i] = e
	mark(i)
	l.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: i, Pad: int32(e.gen)}
	var cerr error
	err := sk.control(func(fd int) { cerr = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev) })
	if err == nil && cerr == nil {
		return true
	}
	l.leave(sk, i)
	return false
}

// leave deregisters the socket in slot i; its reads stop being the loop's.
func (l *loop) leave(sk *sock, i int32) {
	_ = sk.control(func(fd int) { _ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil) })
	l.mu.Lock()
	e := l.table[i]
	switch {
	case e.s != nil:
		e.s.crd.loop = false
	case e.u != nil:
		e.u.urd.loop = false
	}
	l.table[i] = loopEntry{}
	l.free = append(l.free, i)
	l.mu.Unlock()
}

// clients counts the clients the loop serves now.
func (l *loop) sessions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.table {
		if e.s != nil {
			n++
		}
	}
	return n
}
