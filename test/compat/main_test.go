// Package compat drives stock client libraries and tools through the built
// tenantguard binary: pgx, psql, JDBC, psycopg2, psycopg 3 and
// node-postgres against the Postgres sidecar, go-redis (RESP2 and RESP3),
// redis-py, ioredis and redis-cli against the Redis sidecar (issue #16).
//
// One `tenantguard demo` serves the whole package. Each client runs short
// cases in its own language (Python, Java, JavaScript files beside this
// one; Go code here for pgx, go-redis, psql and redis-cli command lines),
// and every case becomes a subtest named client/case. A client that is not
// installed is skipped, naming the package that brings it (`.ci/deps test`
// installs the Debian ones; the npm ones are installed by the test into a
// cache directory). Cases for what the sidecar does not do yet are listed
// in pending (pending_test.go) and skipped while they fail.
package compat

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// binary is the tenantguard built for this package's run.
var binary string

// root is the repository's top directory.
var root string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tenantguard-compat-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_, file, _, _ := runtime.Caller(0)
	root = filepath.Join(filepath.Dir(file), "..", "..")
	binary = filepath.Join(dir, "tenantguard")
	// The same flags as test/e2e, so the two share one build in the cache.
	build := exec.Command("go", "build", "-race", "-o", binary, "./cmd/tenantguard")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build tenantguard: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if err := stopDemo(); err != nil {
		fmt.Fprintln(os.Stderr, "stop demo:", err)
		if code == 0 {
			code = 1
		}
	}
	_ = os.RemoveAll(dir) // os.Exit skips deferred calls
	os.Exit(code)
}
