package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestStopOnSignal: the first SIGTERM ends the context (the graceful
// stop), and stop releases the signals and its goroutine. (A second
// signal ends the process, which a test cannot watch from inside it;
// test/faults TestDrainDeadlines does, from outside.)
func TestStopOnSignal(t *testing.T) {
	ctx, stop := stopOnSignal()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end within 10s of SIGTERM")
	}
	stop()
}
