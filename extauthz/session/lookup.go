package session

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Checks of first-seen tokens each need their session's tenant and user
// from the store. Sent one by one, every check costs a write and a read on
// a connection of its own and wakes Redis once. sessionLookups batches
// them like a group commit: while one round trip is out, the lookups that
// arrive queue up, and the next round trip takes all of them in one
// pipeline. A lone lookup goes out at once, so batching adds no delay; it
// only appears when checks arrive faster than the store answers.

// sessionLookup is one session's lookup: the key and, once done, the
// answer.
type sessionLookup struct {
	key          string
	tenant, user string
	found        bool // the session hash exists
	err          error
	done         chan struct{} // closed when answered, or a value sent: lead the next round trip
	lead         bool
}

var lookupPool = sync.Pool{New: func() any { return &sessionLookup{done: make(chan struct{}, 1)} }}

// sessionLookups serializes round trips to the store and batches the
// lookups waiting for one.
type sessionLookups struct {
	mu      sync.Mutex
	busy    bool             // a round trip is out or about to be
	waiting []*sessionLookup // queued for the next round trip, oldest first
}

// lookupSession returns the tenant and user of the session hash at key;
// found is false if there is none.
func (v *Verifier) lookupSession(ctx context.Context, key string) (tenant, user string, found bool, err error) {
	l := lookupPool.Get().(*sessionLookup)
	l.key = key
	lk := &v.lookups
	lk.mu.Lock()
	if lk.busy {
		lk.waiting = append(lk.waiting, l)
		lk.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			// The answer still comes; whoever sends it frees l.
			lk.mu.Lock()
			if i := indexOf(lk.waiting, l); i >= 0 {
				lk.waiting = append(lk.waiting[:i], lk.waiting[i+1:]...)
				lk.mu.Unlock()
				l.reset()
				return "", "", false, ctx.Err()
			}
			lk.mu.Unlock()
			<-l.done // already taken into a round trip: it is answered shortly
		}
		if !l.lead {
			tenant, user, found, err = l.tenant, l.user, l.found, l.err
			l.reset()
			return tenant, user, found, err
		}
		// Our turn to lead: lk.busy stayed true for us.
	} else {
		lk.busy = true
		lk.mu.Unlock()
	}
	batch := []*sessionLookup{l}
	lk.mu.Lock()
	batch = append(batch, lk.waiting...)
	clear(lk.waiting)
	lk.waiting = lk.waiting[:0]
	lk.mu.Unlock()
	v.roundTrip(context.WithoutCancel(ctx), batch)
	tenant, user, found, err = l.tenant, l.user, l.found, l.err
	for _, o := range batch[1:] {
		o.done <- struct{}{}
	}
	// Hand the next round trip to the oldest lookup that queued meanwhile.
	lk.mu.Lock()
	if len(lk.waiting) > 0 {
		next := lk.waiting[0]
		lk.waiting = lk.waiting[1:]
		next.lead = true
		next.done <- struct{}{}
	} else {
		lk.busy = false
	}
	lk.mu.Unlock()
	l.reset()
	return tenant, user, found, err
}

// roundTrip answers every lookup of batch with one pipeline.
func (v *Verifier) roundTrip(ctx context.Context, batch []*sessionLookup) {
	v.m.storeLookups.Add(float64(len(batch)))
	if len(batch) == 1 {
		l := batch[0]
		vals, err := v.rdb.HMGet(ctx, l.key, "tenant", "user").Result()
		l.answer(vals, err)
		return
	}
	pipe := v.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(batch))
	for i, l := range batch {
		cmds[i] = pipe.HMGet(ctx, l.key, "tenant", "user")
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, l := range batch {
		l.answer(cmds[i].Result())
	}
}

func (l *sessionLookup) answer(vals []any, err error) {
	if err != nil {
		l.err = err
		return
	}
	l.found = vals[0] != nil
	l.tenant, _ = vals[0].(string)
	l.user, _ = vals[1].(string)
}

// reset returns l to the pool, unless its answer may still be sent.
func (l *sessionLookup) reset() {
	*l = sessionLookup{done: l.done}
	lookupPool.Put(l)
}

func indexOf(s []*sessionLookup, l *sessionLookup) int {
	for i, x := range s {
		if x == l {
			return i
		}
	}
	return -1
}
