// Package memreturn gives memory the Go runtime no longer uses back to the
// operating system once a burst has passed.
//
// After a burst (ten thousand logins, a flood of checks) the runtime keeps
// the freed heap and goroutine stacks for reuse, returning them only as far
// as its heap goal, about twice the live heap with GOGC=100. A sidecar's
// live heap for ten thousand parked clients is about 3 KiB each, and it
// would stay at three times that resident. PgBouncer gives its packet
// buffers back to a pool when a client goes quiet; this is the same for a
// Go heap: every Interval, if more than MinFree bytes of the heap are free
// and not yet returned, it runs debug.FreeOSMemory (a collection, then
// everything free returned). It costs one collection per interval at most,
// and only while there is that much to give back.
package memreturn

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Defaults: check every 5 s, return memory when 8 MiB or more lie free.
const (
	DefaultInterval = 5 * time.Second
	DefaultMinFree  = 8 << 20
)

const freeMetric = "/memory/classes/heap/free:bytes"

// Free is the heap's memory that is free and not yet returned to the
// operating system.
func Free() uint64 {
	s := []metrics.Sample{{Name: freeMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// Run checks every interval until ctx ends, returning the free heap to the
// operating system whenever more than minFree bytes of it are held. Zero
// arguments take the defaults. It returns when ctx ends.
func Run(ctx context.Context, interval time.Duration, minFree uint64) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if minFree == 0 {
		minFree = DefaultMinFree
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if Free() > minFree {
			debug.FreeOSMemory()
		}
	}
}
