package netserve

import (
	"fmt"
	"sync/atomic"
	"syscall"
)

// Budget is a cap on client connections shared by several acceptors: the
// file descriptors a process can give its clients once its own needs
// (upstream pools, listeners, logs, the admin endpoint) are set aside.
// Connections past it are refused at once, so the process never reaches
// its descriptor limit through clients alone.
type Budget struct {
	max int64
	n   atomic.Int64
}

// NewBudget returns a budget of max connections (max <= 0: unlimited).
func NewBudget(max int) *Budget { return &Budget{max: int64(max)} }

// FDBudget returns a budget of the process's file-descriptor limit
// (RLIMIT_NOFILE, soft; Go raises it to the hard limit at start) less
// reserve. It fails when the limit leaves fewer than 16 descriptors for
// clients: the process could not serve anyone.
func FDBudget(reserve int) (*Budget, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return nil, fmt.Errorf("read file descriptor limit: %w", err)
	}
	if rl.Cur > 1<<31 { // RLIM_INFINITY included
		return NewBudget(0), nil
	}
	left := int64(rl.Cur) - int64(reserve)
	if left < 16 {
		return nil, fmt.Errorf("file descriptor limit %d leaves %d for clients after %d reserved for upstream connections and the process; raise it (ulimit -n)", rl.Cur, left, reserve)
	}
	return NewBudget(int(left)), nil
}

// Max is the cap; 0 means unlimited.
func (b *Budget) Max() int { return int(b.max) }

// InUse is the number of connections holding a share.
func (b *Budget) InUse() int { return int(b.n.Load()) }

func (b *Budget) take() bool {
	if n := b.n.Add(1); b.max > 0 && n > b.max {
		b.n.Add(-1)
		return false
	}
	return true
}

func (b *Budget) give() { b.n.Add(-1) }
