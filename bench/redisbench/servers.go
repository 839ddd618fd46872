package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tenantguard/tenantguard/internal/pgcluster"
	"github.com/tenantguard/tenantguard/internal/redisserver"
)

// nutcrackerBin is twemproxy, from the Debian package nutcracker.
const nutcrackerBin = "nutcracker"

// ensureBinary builds tenantguard into path if it does not exist yet.
func ensureBinary(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	logf("building %s", path)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./cmd/tenantguard")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s ./cmd/tenantguard (run from the repository root): %w\n%s", path, err, out)
	}
	return nil
}

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
	logf("started redis-server on %s", rs.Addr())
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
func tenantguardConfig(pgPort, redisPort, adminPort, pgListen int, redisUpstream string, sharedConns int) string {
	return fmt.Sprintf(`listen:
  postgres: "127.0.0.1:%d"
  redis: "127.0.0.1:%d"
  admin: "127.0.0.1:%d"
postgres:
  databases:
    - name: postgres
      url: "postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable"
redis:
  upstream: %q
  shared_connections: %d
tenants:
  - id: %s
    passwords: [%q]
`, pgListen, redisPort, adminPort, pgRole, pgRolePass, pgPort, redisUpstream, sharedConns, tenantID, tenantPass)
}

// startTenantguard runs `tenantguard sidecar` with its Redis listener in
// front of redisUpstream. With several sidecars (labelled) each is named
// after its shared_connections.
func startTenantguard(ctx context.Context, bin, redisUpstream string, pgPort, sharedConns int, labelled bool) (*service, error) {
	name := "tenantguard"
	if labelled {
		name = fmt.Sprintf("tenantguard sc=%d", sharedConns)
	}
	s, err := newService(name)
	if err != nil {
		return nil, err
	}
	s.user, s.password = tenantID, tenantPass
	ports, err := freePorts(3)
	if err != nil {
		return nil, joinStop(s, err)
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	conf := filepath.Join(s.dir, "tenantguard.yaml")
	text := tenantguardConfig(pgPort, ports[1], ports[2], ports[0], redisUpstream, sharedConns)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, joinStop(s, fmt.Errorf("%s: write config: %w", name, err))
	}
	// Warnings and errors only: no per-connection logging on the hot path.
	if err := s.start(ctx, bin, "sidecar", "--config", conf, "--log-level", "warn"); err != nil {
		return nil, err
	}
	return s, nil
}

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
func startTwemproxy(ctx context.Context, redisUpstream string) (*service, error) {
	s, err := newService("twemproxy")
	if err != nil {
		return nil, err
	}
	s.stopExit = 1 // nutcracker exits 1 on SIGINT
	ports, err := freePorts(2)
	if err != nil {
		return nil, joinStop(s, err)
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	conf := filepath.Join(s.dir, "nutcracker.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nutcrackerConf, s.addr, redisUpstream)), 0o600); err != nil {
		return nil, joinStop(s, fmt.Errorf("twemproxy: write config: %w", err))
	}
	ncLog := filepath.Join(s.dir, "nutcracker.log")
	s.logs = append(s.logs, ncLog)
	if out, err := exec.CommandContext(ctx, nutcrackerBin, "-t", "-c", conf).CombinedOutput(); err != nil {
		return nil, joinStop(s, fmt.Errorf("twemproxy: nutcracker -t -c %s: %w\n%s", conf, err, out))
	}
	if err := s.start(ctx, nutcrackerBin, "-c", conf, "-o", ncLog,
		"-s", strconv.Itoa(ports[1]), "-a", "127.0.0.1"); err != nil {
		return nil, err
	}
	return s, nil
}

// freePorts returns n distinct ports on 127.0.0.1 that were free a moment
// ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for len(ports) < n {
		p, err := pgcluster.FreePort()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// joinStop stops a service that failed to start and adds any error from that.
func joinStop(s *service, err error) error {
	if stopErr := s.stop(); stopErr != nil {
		return fmt.Errorf("%w (cleanup: %v)", err, stopErr)
	}
	return err
}
