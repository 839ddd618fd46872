package session

import (
	"container/heap"
	"context"
	"time"

	"github.com/tenantguard/tenantguard/policy"
)

// watchMaxSleep bounds the watcher's sleep, so a deadline that moves with
// the clock (Config.Now in tests, or a wall clock that jumps) is noticed
// within a second.
const watchMaxSleep = time.Second

// watchEntry asks the watcher to look at st's leases at time at.
type watchEntry struct {
	at time.Time
	st *sessionState
}

// watchHeap is a min-heap of entries by time. It holds one live entry per
// session with leases (the earliest token expiry among them) and maybe
// stale ones, which cost one look when they come up.
type watchHeap []watchEntry

func (h watchHeap) Len() int           { return len(h) }
func (h watchHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h watchHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *watchHeap) Push(x any)        { *h = append(*h, x.(watchEntry)) }
func (h *watchHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = watchEntry{}
	*h = old[:len(old)-1]
	return e
}

// schedule makes the watcher look at st's leases at time at, unless it
// will already look earlier.
func (v *Verifier) schedule(st *sessionState, at time.Time) {
	v.watchMu.Lock()
	defer v.watchMu.Unlock()
	if !st.scheduled.IsZero() && !at.Before(st.scheduled) {
		return
	}
	st.scheduled = at
	heap.Push(&v.watch, watchEntry{at, st})
	if v.watch[0].st == st {
		v.poke()
	}
}

// poke wakes the watcher to recompute its next deadline.
func (v *Verifier) poke() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// watchLoop is the watcher goroutine: it ends leases whose token expired
// and, once an outage has outlasted the grace period, every open lease.
func (v *Verifier) watchLoop(ctx context.Context) {
	defer v.wg.Done()
	timer := time.NewTimer(watchMaxSleep)
	defer timer.Stop()
	for {
		now := v.cfg.Now()
		next := v.expireLeases(now)
		if dl, ok := v.outageDeadline(); ok {
			if !now.Before(dl) {
				v.endAll(policy.ErrSessionStoreLost)
			} else if next.IsZero() || dl.Before(next) {
				next = dl
			}
		}
		sleep := watchMaxSleep
		if !next.IsZero() {
			sleep = min(sleep, max(next.Sub(now), time.Millisecond))
		}
		timer.Reset(sleep)
		select {
		case <-ctx.Done():
			return
		case <-v.wake:
		case <-timer.C:
		}
	}
}

// expireLeases ends the leases whose token expired by now and returns the
// next time something is due (zero if nothing is).
func (v *Verifier) expireLeases(now time.Time) time.Time {
	var due []*sessionState
	v.watchMu.Lock()
	for len(v.watch) > 0 && !v.watch[0].at.After(now) {
		e := heap.Pop(&v.watch).(watchEntry)
		if e.st.scheduled.Equal(e.at) {
			e.st.scheduled = time.Time{}
		}
		due = append(due, e.st)
	}
	v.watchMu.Unlock()
	for _, st := range due {
		var ended []*lease
		var next time.Time
		st.mu.Lock()
		for l := range st.leases {
			switch {
			case !now.Before(l.exp):
				delete(st.leases, l)
				ended = append(ended, l)
			case next.IsZero() || l.exp.Before(next):
				next = l.exp
			}
		}
		if !next.IsZero() {
			v.schedule(st, next)
		}
		st.mu.Unlock()
		for _, l := range ended {
			l.end(policy.ErrSessionEnded)
		}
		if len(ended) > 0 {
			v.log.Info("session token expired; leases ended", "session", st.idHex, "tenant", st.tenant, "leases", len(ended))
		}
	}
	v.watchMu.Lock()
	defer v.watchMu.Unlock()
	if len(v.watch) > 0 {
		return v.watch[0].at
	}
	return time.Time{}
}

// outageDeadline returns when open leases must end because the store has
// been unreachable for the grace period; ok is false while it is up (or
// has never been up: no lease can have been opened then).
func (v *Verifier) outageDeadline() (time.Time, bool) {
	l := v.link.Load()
	if l.state != linkDown || l.prevUp == nil {
		return time.Time{}, false
	}
	return l.since.Add(v.cfg.Grace), true
}

// endAll ends every open lease with err.
func (v *Verifier) endAll(err error) {
	n := 0
	for _, st := range v.watched() {
		st.mu.Lock()
		ended := make([]*lease, 0, len(st.leases))
		for l := range st.leases {
			ended = append(ended, l)
		}
		clear(st.leases)
		st.mu.Unlock()
		for _, l := range ended {
			l.end(err)
		}
		n += len(ended)
	}
	if n > 0 {
		v.log.Warn("session store unreachable past the grace period; leases ended", "leases", n, "grace", v.cfg.Grace)
	}
}
