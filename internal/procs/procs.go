// Package procs chooses how many threads may run the sidecar's Go code at
// once (runtime.GOMAXPROCS): the GOMAXPROCS environment variable if set,
// else the configuration's `procs`, else one.
//
// One is the default because the sidecar's work is moving small messages
// between sockets, where a second P costs more than it gives (most likely
// an idle P's thread looking for goroutines to steal, and the client and
// server sides of one transaction running on different threads). On a
// 2-core machine under pgbench, one P used 11-15% less CPU per select-only
// transaction than two, and 17-26% less per TPC-B-like one, at the same
// throughput (bench/RESULTS.md). PgBouncer and twemproxy are
// single-threaded too. A sidecar serving one pod rarely needs more; one that
// does (many TLS handshakes, firewall misses) sets `procs: auto`, Go's own
// choice (the container's CPU limit, else every core), or a number.
package procs

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Auto is a configured `procs: auto`: Go's own default.
const Auto = -1

// Default is the number of procs when neither the environment nor the
// configuration says.
const Default = 1

// Source says where the number came from.
type Source string

// The sources.
const (
	SourceEnv     Source = "GOMAXPROCS"
	SourceConfig  Source = "config"
	SourceAuto    Source = "auto"
	SourceDefault Source = "default"
)

// Choose returns the number of procs to run with and where it came from,
// without applying it: configured is the configuration's (0: not set;
// Auto: Go's default).
func Choose(configured int) (int, Source) {
	switch {
	case os.Getenv("GOMAXPROCS") != "":
		return runtime.GOMAXPROCS(0), SourceEnv // the runtime read it at start
	case configured == Auto:
		return runtime.GOMAXPROCS(0), SourceAuto
	case configured > 0:
		return configured, SourceConfig
	}
	return Default, SourceDefault
}

// Apply sets the number Choose returns and returns it. Setting it turns
// off Go's own updates from the container's CPU limit; with SourceEnv or
// SourceAuto it is left alone.
func Apply(configured int) (int, Source) {
	n, src := Choose(configured)
	if src == SourceConfig || src == SourceDefault {
		runtime.GOMAXPROCS(n)
	}
	return n, src
}

// Parse reads `procs` as a configuration file writes it: a positive
// number or "auto"; "" is 0, not set.
func Parse(s string) (int, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return 0, nil
	case "auto":
		return Auto, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 1024 {
		return 0, fmt.Errorf("%q is not a number of procs (1 to 1024, or auto)", s)
	}
	return n, nil
}
