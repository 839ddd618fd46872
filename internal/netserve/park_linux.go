package netserve

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// parker holds an acceptor's parked connections: each idle connection's
// descriptor sits in one epoll set, level-triggered and one-shot, watched
// by one goroutine that resumes the connection's handler, in a new
// goroutine, when bytes arrive or the peer hangs up.
type parker struct {
	mu      sync.Mutex
	ready   bool // the epoll set and stop pipe exist
	running bool // the loop goroutine runs
	epfd    int
	stopR   int // read end of a pipe in the set: written to stop the loop
	stopW   int
	done    chan struct{}
	parked  map[int32]*parkedConn // by descriptor
}

type parkedConn struct {
	conn   net.Conn
	resume func(net.Conn) bool
}

// setup creates the epoll set and starts the loop. Called with mu held.
func (a *Acceptor) setupParker() error {
	p := &a.parker
	if p.ready {
		return nil
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd)
		return err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fds[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fds[0], &ev); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(fds[0])
		_ = syscall.Close(fds[1])
		return err
	}
	p.epfd, p.stopR, p.stopW = epfd, fds[0], fds[1]
	p.parked = map[int32]*parkedConn{}
	p.done = make(chan struct{})
	p.ready, p.running = true, true
	go a.parkLoop()
	return nil
}

// descriptor returns c's file descriptor, or -1 when c is not a plain
// socket (TLS and other wrappers may hold bytes of their own).
func descriptor(c net.Conn) int32 {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	var fd int32 = -1
	_ = raw.Control(func(u uintptr) { fd = int32(u) })
	return fd
}

// park adds c to the set.
func (a *Acceptor) park(c net.Conn, resume func(net.Conn) bool) bool {
	fd := descriptor(c)
	if fd < 0 {
		return false
	}
	p := &a.parker
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		if p.ready || a.setupParker() != nil {
			return false // stopped, or no epoll
		}
	}
	p.parked[fd] = &parkedConn{conn: c, resume: resume}
	// Level-triggered: bytes that arrived before this call wake it at once.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		delete(p.parked, fd)
		return false
	}
	return true
}

// take removes a parked connection from the set: nil unless fd is parked
// (and, when c is given, parked for c).
func (a *Acceptor) take(fd int32, c net.Conn) *parkedConn {
	p := &a.parker
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.parked[fd]
	if pc == nil || (c != nil && pc.conn != c) {
		return nil
	}
	delete(p.parked, fd)
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	return pc
}

// parkLoop resumes parked connections as they become readable.
func (a *Acceptor) parkLoop() {
	p := &a.parker
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if a.Log != nil {
				a.Log.Error("parked connections: epoll_wait failed", "error", err)
			}
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == p.stopR {
				return
			}
			if pc := a.take(ev.Fd, nil); pc != nil {
				go a.run(pc.conn, pc.resume)
			}
		}
	}
}

// wake resumes c at once if it is parked.
func (a *Acceptor) wake(c net.Conn) {
	p := &a.parker
	p.mu.Lock()
	ready := p.ready
	p.mu.Unlock()
	if !ready {
		return
	}
	if fd := descriptor(c); fd >= 0 {
		if pc := a.take(fd, c); pc != nil {
			go a.run(pc.conn, pc.resume)
		}
	}
}

// stopParker ends the loop and frees the set; called once no connection
// is left.
func (a *Acceptor) stopParker() {
	p := &a.parker
	p.mu.Lock()
	running := p.running
	p.running = false
	p.mu.Unlock()
	if !running {
		return
	}
	_, _ = syscall.Write(p.stopW, []byte{1})
	<-p.done
	_ = syscall.Close(p.epfd)
	_ = syscall.Close(p.stopR)
	_ = syscall.Close(p.stopW)
}
