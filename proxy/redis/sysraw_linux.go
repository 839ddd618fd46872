//go:build linux

package redis

import (
	"syscall"
	"unsafe"
)

// The loop's read(2), write(2) and epoll_wait(2) never wait: every socket
// it touches is non-blocking, and its epoll_wait has a zero timeout. So
// they are made without telling the scheduler (RawSyscall): a goroutine
// in an ordinary system call gives up its processor to sysmon after 20µs,
// and a write to a loopback socket, which runs the peer's TCP receive
// path, often takes that long. Each such hand-off woke a thread and put
// the loop's goroutine on the global run queue; sysmon, finding one to
// retake in nearly every tick, kept polling every 20µs instead of backing
// off to 10ms.

func rawRead(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// epollPoll takes the events ready now, without waiting.
func epollPoll(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
