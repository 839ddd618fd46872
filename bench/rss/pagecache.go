package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// How much of a process's RSS is its binary depends on how the binary's
// pages sit in the page cache: a fault maps the cached pages around it
// (fault-around), so the same process maps more of a file that is cached
// in large folios. A binary fresh from the Go linker (written through a
// memory mapping) maps about 40% more than the same bytes written by
// write(2) (cp, a container runtime unpacking an image layer) or read back
// from disk. So every measured binary is first copied with write(2), and
// before each start its cached pages are either dropped (cold: read back
// from disk by the faults' readahead, as on a node that has not run it
// lately) or all read (warm: as on a node where it runs already).

// cacheModes are the -cache values.
var cacheModes = []string{"cold", "warm"}

// install copies bin into dir with write(2) and syncs it.
func install(bin, dir, name string) (string, error) {
	src, err := os.Open(bin)
	if err != nil {
		return "", err
	}
	defer src.Close()
	path := filepath.Join(dir, name)
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return "", fmt.Errorf("copy %s: %w", bin, err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return "", err
	}
	return path, dst.Close()
}

// setPageCache puts path's pages in the page cache state mode names and
// returns the fraction of its pages cached after.
func setPageCache(path, mode string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	switch mode {
	case "cold":
		// Drops the clean pages no process maps (the control plane runs
		// from its own copy).
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			return 0, fmt.Errorf("fadvise %s: %w", path, err)
		}
	case "warm":
		if _, err := io.Copy(io.Discard, f); err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("page cache mode %q", mode)
	}
	return cachedFraction(f)
}

// cachedFraction is the fraction of f's pages in the page cache
// (mincore(2) over a mapping of it).
func cachedFraction(f *os.File) (float64, error) {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(m)
	pages := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&pages[0]))); errno != 0 {
		return 0, fmt.Errorf("mincore: %w", errno)
	}
	n := 0
	for _, p := range pages {
		n += int(p & 1)
	}
	return float64(n) / float64(len(pages)), nil
}
