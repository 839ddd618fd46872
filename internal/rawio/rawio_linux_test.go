package rawio

import (
	"syscall"
	"testing"
)

func TestEpollPoll(t *testing.T) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(epfd)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: 7}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fds[1], &ev); err != nil {
		t.Fatal(err)
	}
	events := make([]syscall.EpollEvent, 4)
	if n, err := EpollPoll(epfd, events); n != 0 || err != nil {
		t.Fatalf("EpollPoll with nothing ready = %d, %v; want 0, nil", n, err)
	}
	if _, err := Write(fds[0], []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n, err := EpollPoll(epfd, events); n != 1 || err != nil || events[0].Fd != 7 {
		t.Fatalf("EpollPoll with one ready = %d (%+v), %v", n, events[0], err)
	}
}
