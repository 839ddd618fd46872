package tlsconf

import (
	"sync"
	"sync/atomic"
	"time"
)

// reloader keeps a value loaded from files current: get checks the
// files' stamps at most every interval and loads them again when they
// changed. A failed load keeps the value in use; it is retried at every
// check and logged when its error differs from the last one.
type reloader[T any] struct {
	opts  Options
	paths []string
	load  func() (T, error)
	attrs func(T) []any // what a reload logs

	mu      sync.Mutex // one check at a time
	cur     atomic.Pointer[loaded[T]]
	next    atomic.Int64 // UnixNano of the next check
	lastErr string       // the last failed check's error, logged once
	onApply func(T)      // called after every (re)load, under mu
}

type loaded[T any] struct {
	v      T
	stamps []fileStamp
}

// start loads the files a first time: an error here is a configuration
// error.
func (r *reloader[T]) start() error {
	stamps, err := stampFiles(r.paths)
	if err != nil {
		// Let load name the file and the field.
		if _, lerr := r.load(); lerr != nil {
			return lerr
		}
		return err
	}
	v, err := r.load()
	if err != nil {
		return err
	}
	r.cur.Store(&loaded[T]{v: v, stamps: stamps})
	r.next.Store(time.Now().Add(r.opts.CheckInterval).UnixNano())
	if r.onApply != nil {
		r.onApply(v)
	}
	return nil
}

// get returns the current value, reloading it first if the files changed
// and a check is due.
func (r *reloader[T]) get() T {
	now := time.Now()
	if now.UnixNano() >= r.next.Load() {
		r.check(now)
	}
	return r.cur.Load().v
}

// check reloads if the files changed. A handshake that finds another one
// checking goes on with the value in use rather than wait for it.
func (r *reloader[T]) check(now time.Time) {
	if !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if now.UnixNano() < r.next.Load() {
		return
	}
	r.next.Store(now.Add(r.opts.CheckInterval).UnixNano())
	cur := r.cur.Load()
	stamps, err := stampFiles(r.paths)
	if err == nil && sameStamps(stamps, cur.stamps) {
		return
	}
	var v T
	if err == nil {
		v, err = r.load()
	}
	if err != nil {
		if msg := err.Error(); msg != r.lastErr {
			r.opts.Logger.Error("tls: the changed certificate files do not load; keeping the ones in use", "name", r.opts.Name, "error", err)
			r.lastErr = msg
		}
		return
	}
	r.lastErr = ""
	r.cur.Store(&loaded[T]{v: v, stamps: stamps})
	if r.onApply != nil {
		r.onApply(v)
	}
	r.opts.Logger.Info("tls: certificate files reloaded", append([]any{"name", r.opts.Name}, r.attrs(v)...)...)
}
