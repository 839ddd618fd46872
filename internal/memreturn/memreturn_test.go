package memreturn

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var sink [][]byte

// TestRunReturnsFreeHeap frees 64 MiB and checks that Run gives it back to
// the operating system: the free, unreturned heap falls under the threshold.
func TestRunReturnsFreeHeap(t *testing.T) {
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC()
	if f := Free(); f < 32<<20 {
		t.Skipf("the runtime returned the memory by itself (free %d bytes); nothing to check", f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); Run(ctx, 10*time.Millisecond, 4<<20) }()
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for Free() > 4<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("free heap still %d bytes after 10 s", Free())
		}
		runtime.Gosched()
		time.Sleep(5 * time.Millisecond) // polling a gauge with a deadline, not synchronising
	}
}

// TestRunStops checks Run returns when its context ends.
func TestRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, time.Hour, 0) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
