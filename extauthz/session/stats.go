package session

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of one session's analytics held in memory between two flushes.
const (
	// maxPrints caps distinct statement fingerprints; more are dropped (and
	// counted in a metric), so a burst of distinct statements cannot grow
	// memory without bound. The distinct count is then an underestimate.
	maxPrints = 1024
	// maxRules caps distinct refusing rules; further ones count under
	// otherRule. Rules come from the policy, so the cap is rarely reached.
	maxRules  = 256
	otherRule = "_other"
	// maxMinutes caps the minute buckets kept while flushes fail; the
	// oldest are dropped.
	maxMinutes = 64
	// flushInterval is how often the flusher writes deltas to Redis.
	flushInterval = time.Second
)

// minuteCount is one minute's requests and refusals.
type minuteCount struct{ minute, requests, refused int64 }

// statsDelta is analytics not yet in Redis. Its maps are cleared, not
// reallocated, so a session in steady traffic records without allocating.
type statsDelta struct {
	requests, refused int64
	rules             map[string]int64
	prints            map[uint64]struct{}
	minutes           []minuteCount
}

// empty reports whether d holds nothing; every request adds a minute bucket.
func (d *statsDelta) empty() bool { return len(d.minutes) == 0 }

func (d *statsDelta) reset() {
	d.requests, d.refused = 0, 0
	clear(d.rules)
	clear(d.prints)
	d.minutes = d.minutes[:0]
}

// bucket returns the count of minute, adding it if need be.
func (d *statsDelta) bucket(minute int64) *minuteCount {
	for i := len(d.minutes) - 1; i >= 0; i-- {
		if d.minutes[i].minute == minute {
			return &d.minutes[i]
		}
	}
	if len(d.minutes) == maxMinutes {
		copy(d.minutes, d.minutes[1:])
		d.minutes = d.minutes[:maxMinutes-1]
	}
	d.minutes = append(d.minutes, minuteCount{minute: minute})
	return &d.minutes[len(d.minutes)-1]
}

// addRule counts n refusals by rule.
func (d *statsDelta) addRule(rule string, n int64) {
	if d.rules == nil {
		d.rules = make(map[string]int64)
	}
	if _, ok := d.rules[rule]; !ok && len(d.rules) >= maxRules {
		rule = otherRule
	}
	d.rules[rule] += n
}

// addPrint adds a fingerprint; it reports false if it had to drop it.
func (d *statsDelta) addPrint(p uint64) bool {
	if d.prints == nil {
		d.prints = make(map[uint64]struct{})
	}
	if _, ok := d.prints[p]; !ok {
		if len(d.prints) >= maxPrints {
			return false
		}
		d.prints[p] = struct{}{}
	}
	return true
}

// add counts one request in minute; it reports false if the fingerprint
// had to be dropped.
func (d *statsDelta) add(minute int64, print uint64, rule string) bool {
	b := d.bucket(minute)
	d.requests++
	b.requests++
	if rule != "" {
		d.refused++
		b.refused++
		d.addRule(rule, 1)
	}
	return print == 0 || d.addPrint(print)
}

// merge adds o into d and returns how many fingerprints it dropped.
func (d *statsDelta) merge(o *statsDelta) (dropped int) {
	for _, b := range o.minutes {
		m := d.bucket(b.minute)
		m.requests += b.requests
		m.refused += b.refused
	}
	d.requests += o.requests
	d.refused += o.refused
	for r, n := range o.rules {
		d.addRule(r, n)
	}
	for p := range o.prints {
		if !d.addPrint(p) {
			dropped++
		}
	}
	return dropped
}

// sessionStats is one session's analytics in memory: cur is what Record
// adds to; out, owned by the flusher, is what it took from cur and has not
// written yet.
type sessionStats struct {
	mu    sync.Mutex
	cur   statsDelta
	dirty bool // cur is not empty and the session is in Verifier.dirty

	out     statsDelta // only the flusher (Verifier.flushMu held) touches it
	pending bool       // in Verifier.pending; written under both mutexes
}

// idle reports whether nothing is waiting to be written.
func (s *sessionStats) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.dirty && !s.pending
}

// record adds one request of st to its analytics and to its tenant's
// counters. It takes st's stats mutex briefly, never waits for I/O and
// does not allocate once the session's maps and buckets have their size
// and its tenant's rules have been seen.
func (v *Verifier) record(st *sessionState, print uint64, rule string) {
	minute := v.cfg.Now().Unix() / 60
	s := &st.stats
	s.mu.Lock()
	kept := s.cur.add(minute, print, rule)
	first := !s.dirty
	s.dirty = true
	s.mu.Unlock()
	tc := st.counters.Load()
	tc.requests.Inc()
	if rule != "" {
		tc.refused(rule).Inc()
	}
	if !kept {
		v.m.droppedPrints.Inc()
	}
	if first {
		v.dirtyMu.Lock()
		v.dirty = append(v.dirty, st)
		v.dirtyMu.Unlock()
	}
}

// flushScript adds one session's deltas to its analytics keys and marks
// the session active now.
//
//	KEYS: stats hash, fingerprint HLL, minutes hash, session hash,
//	      active zset
//	ARGV: retention (s), now (unix s), id, requests, refused, #rules,
//	      rule, n, ..., #minutes, minute, requests, refused, ..., minute
//	      for new fingerprints, fingerprints...
//
// New distinct fingerprints are counted as the HLL's growth. The keys
// expire a retention period after the session's maximum expiry, or, once
// the session is gone, a retention period after their first write.
var flushScript = redis.NewScript(`
local ret = tonumber(ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[1], 'requests', ARGV[4]) end
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', KEYS[1], 'refused', ARGV[5]) end
local p = 7
for i = 1, tonumber(ARGV[6]) do
  redis.call('HINCRBY', KEYS[1], 'refused:' .. ARGV[p], ARGV[p+1])
  p = p + 2
end
local nm = tonumber(ARGV[p])
p = p + 1
for i = 1, nm do
  if tonumber(ARGV[p+1]) > 0 then redis.call('HINCRBY', KEYS[3], ARGV[p] .. ':r', ARGV[p+1]) end
  if tonumber(ARGV[p+2]) > 0 then redis.call('HINCRBY', KEYS[3], ARGV[p] .. ':x', ARGV[p+2]) end
  p = p + 3
end
local newMinute = ARGV[p]
p = p + 1
if p <= #ARGV then
  local before = redis.call('PFCOUNT', KEYS[2])
  redis.call('PFADD', KEYS[2], unpack(ARGV, p, #ARGV))
  local added = redis.call('PFCOUNT', KEYS[2]) - before
  if added > 0 then redis.call('HINCRBY', KEYS[3], newMinute .. ':n', added) end
end
local t = redis.call('HGET', KEYS[4], 'tenant')
if t then redis.call('HSETNX', KEYS[1], 'tenant', t) end
local mx = redis.call('HGET', KEYS[4], 'max_expires')
for i = 1, 3 do
  if mx then
    redis.call('EXPIREAT', KEYS[i], tonumber(mx) + ret)
  elseif redis.call('TTL', KEYS[i]) == -1 then
    redis.call('EXPIRE', KEYS[i], ret)
  end
end
return 1
`)

// flushLoop is the flusher goroutine: it writes analytics every second
// and drops session states nothing refers to any more.
func (v *Verifier) flushLoop(ctx context.Context) {
	defer v.wg.Done()
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if v.link.Load().state == linkUp {
			fctx, cancel := context.WithTimeout(ctx, flushInterval)
			if err := v.flush(fctx); err != nil && ctx.Err() == nil {
				v.m.flushErrors.Inc()
				v.log.Warn("analytics flush failed; retrying", "error", err)
			}
			cancel()
		}
		v.prune(v.cfg.Now())
	}
}

// flush writes every session's pending analytics in one pipeline. What it
// fails to write stays pending for the next flush.
func (v *Verifier) flush(ctx context.Context) error {
	v.flushMu.Lock()
	defer v.flushMu.Unlock()
	v.dirtyMu.Lock()
	dirty := v.dirty
	v.dirty = v.spare[:0]
	v.dirtyMu.Unlock()
	dropped := 0
	for _, st := range dirty {
		s := &st.stats
		s.mu.Lock()
		if s.out.empty() {
			s.cur, s.out = s.out, s.cur // swap: both keep their maps
		} else {
			dropped += s.out.merge(&s.cur)
			s.cur.reset()
		}
		s.dirty = false
		if !s.pending {
			s.pending = true
			v.pending = append(v.pending, st)
		}
		s.mu.Unlock()
	}
	clear(dirty)
	v.spare = dirty[:0]
	if dropped > 0 {
		v.m.droppedPrints.Add(float64(dropped))
	}
	if len(v.pending) == 0 {
		return nil
	}
	var cmds []*redis.Cmd
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if !v.scriptLoaded {
			if err := flushScript.Load(ctx, v.rdb).Err(); err != nil {
				return err
			}
			v.scriptLoaded = true
		}
		cmds, err = v.flushPipeline(ctx, v.pending)
		if err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			break
		}
		// The store restarted or flushed its scripts, so none of the calls
		// ran: load the script and send them again.
		v.scriptLoaded = false
	}
	kept := v.pending[:0]
	for i, st := range v.pending {
		if cmds[i].Err() == nil && cmds[i].Val() != nil { // the script ran
			s := &st.stats
			s.mu.Lock()
			s.out.reset()
			s.pending = false
			s.mu.Unlock()
			continue
		}
		kept = append(kept, st)
	}
	clear(v.pending[len(kept):])
	v.pending = kept
	return err
}

// flushPipeline sends one flushScript call per session.
func (v *Verifier) flushPipeline(ctx context.Context, sts []*sessionState) ([]*redis.Cmd, error) {
	pipe := v.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(sts))
	retention := strconv.FormatInt(int64(analyticsRetention/time.Second), 10)
	now := v.cfg.Now().Unix()
	active := v.keys.active()
	for i, st := range sts {
		d := &st.stats.out
		args := make([]any, 0, 8+2*len(d.rules)+3*len(d.minutes)+len(d.prints))
		args = append(args, retention, now, st.idHex, d.requests, d.refused, len(d.rules))
		for r, n := range d.rules {
			args = append(args, r, n)
		}
		args = append(args, len(d.minutes))
		newMinute := int64(0)
		for _, b := range d.minutes {
			args = append(args, b.minute, b.requests, b.refused)
			newMinute = max(newMinute, b.minute)
		}
		args = append(args, newMinute)
		for p := range d.prints {
			args = append(args, strconv.FormatUint(p, 16))
		}
		id := st.idHex
		cmds[i] = flushScript.EvalSha(ctx, pipe,
			[]string{v.keys.stats(id), v.keys.fingerprints(id), v.keys.minutes(id), v.keys.session(id), active}, args...)
	}
	// Once per flush, not per session: drop the sessions no longer active,
	// and let the set go if no flush comes for a whole window.
	pipe.ZRemRangeByScore(ctx, active, "-inf", "("+strconv.FormatInt(now-int64(activeWindow/time.Second), 10))
	pipe.Expire(ctx, active, activeWindow)
	_, err := pipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return cmds, err
	}
	return cmds, nil
}
