package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
)

// The upstream role and the tokens of the measured set-up.
const (
	appRole     = "rss_app"
	appPassword = "rss_pw"
	adminToken  = "rss-admin-token-0123456789"
	xdsToken    = "rss-xds-token-0123456789"
	secret      = "acme-secret-1" // acme's password, in the policy and the file
)

// upstreams are the servers every sidecar under measurement talks to:
// PostgreSQL, redis-server and a control plane.
type upstreams struct {
	pg    *pgcluster.Cluster
	redis *redisserver.Server
	cp    *benchkit.Service
	xds   string // the control plane's xDS address
}

// startUpstreams starts PostgreSQL (with the sidecar's database and role
// and the control plane's store), redis-server, and `cpBin controlplane`
// seeded with a policy of one tenant.
func startUpstreams(ctx context.Context, cpBin string) (u *upstreams, err error) {
	u = &upstreams{}
	defer func() {
		if err != nil {
			err = errors.Join(err, u.close())
			u = nil
		}
	}()
	benchkit.Logf("starting PostgreSQL and redis-server")
	if u.pg, err = pgcluster.Start(ctx, pgcluster.Options{}); err != nil {
		return nil, err
	}
	for _, q := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", appRole, appPassword),
		"CREATE DATABASE rss OWNER " + appRole,
		"CREATE DATABASE rss_cp",
	} {
		if err := u.pg.Exec(ctx, "postgres", q); err != nil {
			return nil, err
		}
	}
	if u.redis, err = redisserver.Start(ctx, redisserver.Options{}); err != nil {
		return nil, err
	}
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return nil, err
	}
	u.xds = benchkit.LocalAddr(ports[0])
	admin := benchkit.LocalAddr(ports[1])
	if u.cp, err = benchkit.NewService("control plane", "tg-bench-rss-cp-"); err != nil {
		return nil, err
	}
	u.cp.Addr = u.xds
	if err := writeFile(u.cp.Dir, "policy.yaml", fmt.Sprintf("name: default\ntenants:\n  - id: acme\n    credentials: [%q]\n", secret)); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("listen: {xds: %q, admin: %q}\ndatabase: %q\nadmin_token: %s\nxds_token: %s\nseed: policy.yaml\n",
		u.xds, admin, u.pg.AdminURL("rss_cp"), adminToken, xdsToken)
	if err := writeFile(u.cp.Dir, "controlplane.yaml", cfg); err != nil {
		return nil, err
	}
	if err := u.cp.Start(ctx, httpOK("http://"+admin+"/readyz"), cpBin, "controlplane", "--config", "controlplane.yaml", "--log-level", "warn"); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *upstreams) close() error {
	var errs []error
	if u.cp != nil {
		errs = append(errs, u.cp.Stop())
	}
	if u.redis != nil {
		errs = append(errs, u.redis.Close())
	}
	if u.pg != nil {
		errs = append(errs, u.pg.Close())
	}
	return errors.Join(errs...)
}

// sidecarConfig is the configuration of a sidecar listening on the given
// addresses: always PostgreSQL and the admin endpoint, Redis if redis is
// set; its policy from the control plane if xds, else one tenant in the
// file.
func (u *upstreams) sidecarConfig(pgListen, redisListen, admin string, xds bool) string {
	cfg := fmt.Sprintf("listen:\n  postgres: %q\n  admin: %q\n", pgListen, admin)
	if redisListen != "" {
		cfg += fmt.Sprintf("  redis: %q\nredis:\n  upstream: %q\n", redisListen, u.redis.Addr())
	}
	cfg += fmt.Sprintf("postgres:\n  databases:\n    - name: rss\n      url: \"postgres://%s:%s@127.0.0.1:%d/rss?sslmode=disable\"\n",
		appRole, appPassword, u.pg.Port())
	if xds {
		cfg += fmt.Sprintf("controlplane:\n  address: %q\n  node_id: rss-sidecar\n  token: %s\n", u.xds, xdsToken)
	} else {
		cfg += fmt.Sprintf("tenants:\n  - id: acme\n    passwords: [%q]\n", secret)
	}
	return cfg
}

// httpClient keeps no idle connection open to a measured sidecar (one
// would hold a goroutine and buffers there).
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// httpOK is a readiness check: url answers 200.
func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func writeFile(dir, name, content string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)
}
