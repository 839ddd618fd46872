package xdsclient

import (
	"math/rand/v2"
	"time"
)

// backoff is the wait before the next connection attempt (see Backoff).
type backoff struct {
	cfg Backoff
	cur time.Duration // 0 after a reset
}

func newBackoff(cfg Backoff) *backoff { return &backoff{cfg: cfg} }

// next returns the next wait: the current step, doubled from Initial up to
// Max, with its lower half fixed and its upper half random.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.cfg.Initial
	} else {
		b.cur = min(2*b.cur, b.cfg.Max)
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

// reset starts again from Initial, after a connection that worked.
func (b *backoff) reset() { b.cur = 0 }
