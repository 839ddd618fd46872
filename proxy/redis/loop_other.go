//go:build !linux

package redis

// loop is Linux only: elsewhere every client serves itself.
type loop struct{}

func newLoop(*Server) (*loop, error) { return nil, errNoLoop }

func (*loop) stop() {}

func (*loop) join(*clientConn) bool { return false }

func (*loop) joinUp(*upConn) bool { return false }

func (*loop) sessions() int { return 0 }
