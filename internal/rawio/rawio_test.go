package rawio

import (
	"syscall"
	"testing"
)

func TestReadWrite(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	for _, fd := range fds {
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 8)
	if n, err := Read(fds[1], buf); err != syscall.EAGAIN || n != -1 {
		t.Fatalf("Read of an empty socket = %d, %v; want -1, EAGAIN", n, err)
	}
	if n, err := Write(fds[0], []byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n, err := Read(fds[1], buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %d %q, %v", n, buf[:max(n, 0)], err)
	}
	if n, err := Write(fds[0], nil); n != 0 || err != nil {
		t.Fatalf("Write of nothing = %d, %v", n, err)
	}
	// A full socket: EAGAIN, not a wait.
	big := make([]byte, 1<<20)
	for {
		n, err := Write(fds[0], big)
		if err == syscall.EAGAIN {
			break
		}
		if err != nil || n <= 0 {
			t.Fatalf("Write to a filling socket = %d, %v", n, err)
		}
	}
	syscall.Close(fds[1])
	if _, err := Write(fds[0], []byte("x")); err != syscall.EPIPE {
		t.Fatalf("Write to a closed peer: %v; want EPIPE", err)
	}
}
