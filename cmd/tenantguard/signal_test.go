package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestStopOnSignal: the first SIGTERM ends the context (the graceful
// stop), and stop releases the signals and its goroutine.
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

// signalChildEnv makes this test binary the child of
// TestSecondSignalEndsTheProcess.
const signalChildEnv = "TG_SIGNAL_CHILD"

// TestSecondSignalEndsTheProcess: a process that began its graceful stop
// on a first SIGTERM, and stays busy with it on one processor, is ended by
// the second at once, by the signal. The process is this test binary run
// again as a child; it says "stopping" once its context has ended.
func TestSecondSignalEndsTheProcess(t *testing.T) {
	if os.Getenv(signalChildEnv) != "" {
		runtime.GOMAXPROCS(1)
		ctx, stop := stopOnSignal()
		defer stop()
		os.Stdout.WriteString("ready\n")
		<-ctx.Done()
		os.Stdout.WriteString("stopping\n")
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); { // a drain's work
		}
		os.Exit(0) // not ended by the second signal
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondSignalEndsTheProcess$")
	cmd.Env = append(os.Environ(), signalChildEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	next := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			_ = cmd.Process.Kill()
			t.Fatalf("child said %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	next("ready")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next("stopping")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("child exited %v, want ended by SIGTERM", err)
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Fatalf("child exited %v, want ended by SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the second SIGTERM did not end the process within 10s")
	}
}
