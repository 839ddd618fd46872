package netserve

import (
	"time"

	"golang.org/x/time/rate"
)

// DefaultFailedHandshakesPerSecond is the rate of failed handshakes a
// listener absorbs at full accept speed (with as many again in a burst)
// before it paces its accepts.
const DefaultFailedHandshakesPerSecond = 100

// pacing slows the accept loop while connections fail their handshakes
// (garbage, oversized or partial frames held open, wrong passwords) faster
// than a set rate. Each failure takes a token; with none left, the loop
// accepts one connection per token as tokens come back. Connections not
// yet accepted wait in the kernel's backlog, and once it is full a flood's
// own connects wait too, so a flood of bad connections costs the process a
// bounded share of CPU instead of all of it: the clients already served,
// other tenants' included, keep their latency. Honest clients that connect
// meanwhile are accepted in turn, later. Like Envoy's connection rate
// limit, but counting only connections that turned out to be bad, so an
// application that connects per request is never paced for that.
type pacing struct {
	lim *rate.Limiter
}

func newPacing(perSecond int) *pacing {
	return &pacing{lim: rate.NewLimiter(rate.Limit(perSecond), perSecond)}
}

// failed takes a token for a failed handshake; with none left it takes
// nothing (the debt does not grow past one token's wait).
func (p *pacing) failed() { p.lim.Allow() }

// delay is how long the accept loop waits before its next accept: zero
// while tokens are left.
func (p *pacing) delay() time.Duration {
	now := time.Now()
	t := p.lim.TokensAt(now)
	if t >= 1 {
		return 0
	}
	return time.Duration((1 - t) / float64(p.lim.Limit()) * float64(time.Second))
}
