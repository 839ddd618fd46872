package netserve

import (
	"net"
	"os"
	"sync"
	"time"
)

// spareFD is one file descriptor the process holds in reserve, so that it
// can still accept a connection (to refuse it) when every other
// descriptor is taken: close the spare, accept, refuse and close the
// connection, reopen the spare. Without it a listener out of descriptors
// either spins on EMFILE or leaves clients hanging in the backlog. One
// spare serves every acceptor of the process; mu serialises its use.
type spareFD struct {
	once sync.Once
	mu   sync.Mutex
	f    *os.File
}

var spare spareFD

func (s *spareFD) init() {
	s.once.Do(func() {
		s.mu.Lock()
		s.f, _ = os.Open(os.DevNull)
		s.mu.Unlock()
	})
}

// spareAcceptTimeout bounds the accept made with the spare descriptor: the
// connection that caused EMFILE is pending, so it returns at once unless
// another acceptor took it first.
const spareAcceptTimeout = 10 * time.Millisecond

// shed accepts one pending connection on ln using the spare descriptor and
// hands it to refuse, which must close it; then it takes the spare back.
// It reports false when there was no spare (another goroutine took the
// freed descriptor meanwhile) or nothing was pending.
func (s *spareFD) shed(ln net.Listener, refuse func(net.Conn)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		s.f, _ = os.Open(os.DevNull)
		return false
	}
	_ = s.f.Close()
	s.f = nil
	type deadliner interface{ SetDeadline(time.Time) error }
	dl, _ := ln.(deadliner)
	if dl != nil {
		_ = dl.SetDeadline(time.Now().Add(spareAcceptTimeout))
	}
	c, err := ln.Accept()
	if dl != nil {
		_ = dl.SetDeadline(time.Time{})
	}
	if err == nil {
		refuse(c)
	}
	s.f, _ = os.Open(os.DevNull)
	return err == nil
}
