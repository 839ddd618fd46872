package compat

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"
)

// clientTimeout bounds one client's whole run; a case that hangs (a new
// path the sidecar does not serve yet, say) costs at most this.
const clientTimeout = 2 * time.Minute

// client is one client library or tool. run skips t when the client is
// not installed, naming the package that brings it.
type client struct {
	name string
	run  func(ctx context.Context, t *testing.T, env map[string]string) report
}

// clients is the compatibility matrix.
var clients = []client{
	{"pgx", goClient(pgxVersion, pgxCases)},
	{"psql", goClient(psqlVersion, psqlCases)},
	{"jdbc", javaClient("JdbcCases")},
	{"psycopg2", pythonClient("psycopg2", "python3-psycopg2", "psycopg2_cases.py")},
	{"psycopg", pythonClient("psycopg", "python3-psycopg", "psycopg_cases.py")},
	{"node-postgres", nodeClient("pg_cases.js")},
	{"go-redis-resp2", goClient(goredisVersion, goredisCases(2))},
	{"go-redis-resp3", goClient(goredisVersion, goredisCases(3))},
	{"redis-py", pythonClient("redis", "python3-redis", "redispy_cases.py")},
	{"ioredis", nodeClient("ioredis_cases.js")},
	{"redis-cli", goClient(redisCLIVersion, redisCLICases)},
}

// TestCompat runs every client's cases against one demo, two clients at a
// time (go test's -parallel default on two cores).
func TestCompat(t *testing.T) {
	env := demoEnv(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tenantguard demo output:\n%s", theDemo.out.String())
		}
	})
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
			defer cancel()
			judge(t, c.name, c.run(ctx, t, env))
		})
	}
}

// goCase is a case run in the test process: pgx and go-redis calls, or
// psql and redis-cli command lines. It returns what it saw, or why it
// failed.
type goCase struct {
	name string
	run  func(ctx context.Context, env map[string]string) (detail string, err error)
}

// caseTimeout bounds one Go case.
const caseTimeout = 30 * time.Second

// goClient runs Go cases one after another, as a script would. version
// skips t when the tool is missing.
func goClient(version func(t *testing.T) string, cases []goCase) func(context.Context, *testing.T, map[string]string) report {
	return func(ctx context.Context, t *testing.T, env map[string]string) report {
		r := report{results: map[string]result{}}
		r.Version = version(t)
		for _, c := range cases {
			r.Cases = append(r.Cases, c.name)
			cctx, cancel := context.WithTimeout(ctx, caseTimeout)
			detail, err := c.run(cctx, env)
			cancel()
			res := result{Case: c.name, OK: err == nil}
			if err != nil {
				detail = err.Error()
			}
			res.Detail, _ = json.Marshal(detail)
			r.results[c.name] = res
		}
		return r
	}
}

// lookPath finds a program or skips the test, naming the package that
// brings it.
func lookPath(t *testing.T, program, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		t.Skipf("%s not found: install the Debian package %s (`.ci/deps test` does, as root)", program, pkg)
	}
	return p
}

// commandOutput runs a command and returns its combined output.
func commandOutput(ctx context.Context, env []string, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = bytes.NewBufferString(stdin)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}
