package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
)

// nutcrackerBin is twemproxy, from the Debian package nutcracker.
const nutcrackerBin = "nutcracker"

// toolVersion runs bin with args and returns the first line of its output.
func toolVersion(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s (install redis-tools, redis-server and nutcracker): %w\n%s",
			bin, strings.Join(args, " "), err, out)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line, nil
}

// startRedis starts the throwaway redis-server every target talks to.
func startRedis(ctx context.Context) (*redisserver.Server, error) {
	rs, err := redisserver.Start(ctx, redisserver.Options{})
	if err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	benchkit.Logf("started redis-server on %s", rs.Addr())
	return rs, nil
}

// startPostgres starts a throwaway PostgreSQL with a login role for the
// sidecar's PostgreSQL listener, which this benchmark does not use.
func startPostgres(ctx context.Context) (c *pgcluster.Cluster, err error) {
	c, err = pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	if err := c.Exec(ctx, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", pgRole, pgRolePass)); err != nil {
		return nil, fmt.Errorf("create role %s: %w", pgRole, err)
	}
	return c, nil
}

// tenantguardConfig renders the sidecar configuration.
func tenantguardConfig(pgPort, redisPort, adminPort, pgListen int, redisUpstream string, sharedConns int, nearCache string) string {
	return fmt.Sprintf(`listen:
  postgres: "127.0.0.1:%d"
  redis: "127.0.0.1:%d"
  admin: "127.0.0.1:%d"
debug: {pprof: true} # /debug/pprof/ on the admin listener, for profiling a run by hand
postgres:
  databases:
    - name: postgres
      url: "postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable"
redis:
  upstream: %q
  shared_connections: %d
%stenants:
  - id: %s
    passwords: [%q]
`, pgListen, redisPort, adminPort, pgRole, pgRolePass, pgPort, redisUpstream, sharedConns, nearCache, tenantID, tenantPass)
}

// startTenantguard runs `tenantguard sidecar` with its Redis listener in
// front of redisUpstream. With several sidecars (labelled) each is named
// after its shared_connections.
func startTenantguard(ctx context.Context, bin, redisUpstream string, pgPort, sharedConns int, labelled bool) (*benchkit.Service, error) {
	name := "tenantguard"
	if labelled {
		name = fmt.Sprintf("tenantguard sc=%d", sharedConns)
	}
	return startTenantguardNamed(ctx, name, bin, redisUpstream, pgPort, sharedConns, "")
}

// startTenantguardNamed is startTenantguard with a name and a
// redis.near_cache section (YAML lines under redis:, "" for none).
func startTenantguardNamed(ctx context.Context, name, bin, redisUpstream string, pgPort, sharedConns int, nearCache string) (*benchkit.Service, error) {
	s, err := newService(name)
	if err != nil {
		return nil, err
	}
	ports, err := benchkit.FreePorts(3)
	if err != nil {
		return nil, s.Discard(err)
	}
	s.Addr = benchkit.LocalAddr(ports[1])
	metricsURL[s] = "http://" + benchkit.LocalAddr(ports[2]) + "/metrics"
	conf := filepath.Join(s.Dir, "tenantguard.yaml")
	text := tenantguardConfig(pgPort, ports[1], ports[2], ports[0], redisUpstream, sharedConns, nearCache)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, s.Discard(fmt.Errorf("%s: write config: %w", name, err))
	}
	// Warnings and errors only: no per-connection logging on the hot path.
	if err := s.Start(ctx, readyFor(s, tenantID, tenantPass), bin, "sidecar", "--config", conf, "--log-level", "warn"); err != nil {
		return nil, err
	}
	return s, nil
}

// metricsURL is each tenantguard's Prometheus endpoint (its admin listener).
var metricsURL = map[*benchkit.Service]string{}

// nutcrackerConf is twemproxy's configuration: one pool, one server;
// %s are the listen address and the redis-server address.
const nutcrackerConf = `bench:
  listen: %s
  redis: true
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  servers:
    - %s:1
`

// startTwemproxy runs nutcracker in the foreground in front of
// redisUpstream, with its stats listener on a free local port.
func startTwemproxy(ctx context.Context, redisUpstream string) (*benchkit.Service, error) {
	s, err := newService("twemproxy")
	if err != nil {
		return nil, err
	}
	s.StopExit = 1 // nutcracker exits 1 on SIGINT
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return nil, s.Discard(err)
	}
	s.Addr = benchkit.LocalAddr(ports[0])
	conf := filepath.Join(s.Dir, "nutcracker.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nutcrackerConf, s.Addr, redisUpstream)), 0o600); err != nil {
		return nil, s.Discard(fmt.Errorf("twemproxy: write config: %w", err))
	}
	ncLog := filepath.Join(s.Dir, "nutcracker.log")
	s.Logs = append(s.Logs, ncLog)
	if out, err := exec.CommandContext(ctx, nutcrackerBin, "-t", "-c", conf).CombinedOutput(); err != nil {
		return nil, s.Discard(fmt.Errorf("twemproxy: nutcracker -t -c %s: %w\n%s", conf, err, out))
	}
	if err := s.Start(ctx, readyFor(s, "", ""), nutcrackerBin, "-c", conf, "-o", ncLog,
		"-s", strconv.Itoa(ports[1]), "-a", "127.0.0.1"); err != nil {
		return nil, err
	}
	return s, nil
}

// newService creates a proxy's temporary directory; Start runs it.
func newService(name string) (*benchkit.Service, error) {
	return benchkit.NewService(name, "redisbench-"+strings.ReplaceAll(name, " ", "-")+"-")
}

// readyFor is a readiness check for s: a client can (log in as user and)
// PING s.Addr.
func readyFor(s *benchkit.Service, user, password string) func(context.Context) error {
	return func(ctx context.Context) error { return ping(ctx, s.Addr, user, password) }
}
