//go:build unix && !linux

package rawio

import "syscall"

// Read is read(2) on fd, an ordinary system call on this platform.
func Read(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }

// Write is write(2) on fd, an ordinary system call on this platform.
func Write(fd int, p []byte) (int, error) { return syscall.Write(fd, p) }
