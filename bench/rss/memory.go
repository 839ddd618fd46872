package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memory is a process's resident memory in KiB, from /proc/PID/status
// (VmRSS) and /proc/PID/smaps (the anonymous and file-backed split, and
// the file-backed part by mapping).
type memory struct {
	vmRSS int64
	anon  int64 // Anonymous: the heap, stacks, private copies of written pages
	file  int64 // Rss less Anonymous: pages of mapped files (page cache)
	// The file-backed part by what is mapped: the binary's text (r-x), its
	// read-only data (r--: rodata, type and pclntab tables, the protobuf
	// descriptors' bytes), and every other file (the C library, the
	// dynamic loader).
	binText, binRO, otherFiles int64
}

// readMemory reads pid's resident memory; bin is its executable, whose
// mappings are told apart from the rest.
func readMemory(pid int, bin string) (memory, error) {
	var m memory
	var err error
	if m.vmRSS, err = statusKiB(pid, "VmRSS"); err != nil {
		return m, err
	}
	exe, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return m, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	// smaps is a header line per mapping ("start-end perms offset dev inode
	// path") followed by "Key: N kB" lines.
	var perms, path string
	var rss int64
	flush := func(anon int64) {
		fileRSS := rss - anon
		m.anon += anon
		m.file += fileRSS
		switch {
		case path == exe && strings.HasPrefix(perms, "r-x"):
			m.binText += fileRSS
		case path == exe:
			m.binRO += fileRSS
		case strings.HasPrefix(path, "/"):
			m.otherFiles += fileRSS
		}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header
			perms, path, rss = fields[1], "", 0
			if len(fields) >= 6 {
				path = fields[5]
			}
			continue
		}
		switch fields[0] {
		case "Rss:":
			rss, err = strconv.ParseInt(fields[1], 10, 64)
		case "Anonymous:":
			var anon int64
			anon, err = strconv.ParseInt(fields[1], 10, 64)
			flush(anon) // Anonymous comes after Rss in every mapping
		}
		if err != nil {
			return m, fmt.Errorf("smaps: %q: %w", sc.Text(), err)
		}
	}
	return m, sc.Err()
}

// statusKiB returns a "Key: N kB" line of /proc/PID/status.
func statusKiB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}
