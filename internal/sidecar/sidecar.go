// Package sidecar wires the data-plane listeners and the admin endpoint
// together for the `tenantguard sidecar` command and the demo.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/credentials"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/memreturn"
	"github.com/tenantguard/tenantguard/internal/netserve"
	"github.com/tenantguard/tenantguard/internal/sessions"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
)

// Sidecar is a running data plane.
type Sidecar struct {
	cfg     *config.Sidecar
	log     *slog.Logger
	policy  *policy.Store // shared by both listeners; SetPolicy swaps it
	pg      *proxypg.Server
	pgLn    net.Listener
	redis   *proxyredis.Server
	redisLn net.Listener
	adminLn net.Listener
	admin   *http.Server
	tokens  *sessions.Verifier // nil unless session tokens are accepted
	xds     *xdsclient.Client  // nil unless the policy comes from a control plane
	// cpCreds secure the control plane connections (nil: plaintext).
	cpCreds credentials.TransportCredentials
	// endMode is the configured session end mode, which a pushed policy
	// without one falls back to.
	endMode policy.SessionEndMode
	// checkedTables are the protected tables last audited upstream (at
	// start, then by applyPolicy, which alone uses it after start).
	checkedTables []policy.TableSpec
	// checkedUpstreams are the upstreams (clusters included) last audited.
	checkedUpstreams []string
	// budget reports load and applies shares (nil without a control plane).
	budget *budgetClient
}

// fdReserve is what the process keeps of its file-descriptor limit for
// itself besides upstream connections: listeners, the poller, the admin
// endpoint and its scrapes, the xDS and session-store connections, cancel
// requests and log files.
const fdReserve = 64

// Start listens on every configured address and starts serving. Listening
// happens here, so an address in use fails before anything runs. ctx bounds
// the start (the upstream isolation audit); cfg is not modified.
func Start(ctx context.Context, cfg *config.Sidecar, log *slog.Logger) (*Sidecar, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The listeners' settings as configured, plus what is shared at run time.
	pgCfg, redisCfg := cfg.Postgres, cfg.Redis
	// Clients of both listeners together get the descriptors the upstream
	// connections and the process itself do not need: past that they are
	// refused at once, so no flood of clients starves the pools.
	budget, err := netserve.FDBudget(fdReserve + pgCfg.UpstreamConns() + redisCfg.UpstreamConns())
	if err != nil {
		return nil, err
	}
	pgCfg.ConnBudget, redisCfg.ConnBudget = budget, budget
	if cfg.TLS != nil {
		// The Postgres listener's certificate, re-read when its files
		// change; SSLRequest gets 'S'.
		srv, err := tlsconf.NewServer(*cfg.TLS, tlsconf.Options{Name: "postgres", Logger: log.With("component", "tls")})
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		if err := tlsconf.RegisterExpiry(reg, "postgres", srv.NotAfter); err != nil {
			return nil, err
		}
		pgCfg.TLS = srv.TLSConfig()
	}
	if cfg.RedisTLS != nil && cfg.RedisListen != "" {
		// The Redis listener's, the same way: a TLS port (RESP has no
		// upgrade), plaintext clients refused unless allowed.
		srv, err := tlsconf.NewServer(*cfg.RedisTLS, tlsconf.Options{Name: "redis", Logger: log.With("component", "tls")})
		if err != nil {
			return nil, fmt.Errorf("redis.tls: %w", err)
		}
		if err := tlsconf.RegisterExpiry(reg, "redis", srv.NotAfter); err != nil {
			return nil, err
		}
		redisCfg.TLS = srv.TLSConfig()
	}
	if cfg.RedisUpstreamTLS != nil && cfg.RedisListen != "" {
		if err := redisUpstreamTLS(&redisCfg, *cfg.RedisUpstreamTLS, reg, log); err != nil {
			return nil, err
		}
	}
	var sc *Sidecar // for the console's RELOAD, which runs once sc exists
	if pgCfg.Console != nil {
		console := *pgCfg.Console
		console.Version = cfg.Version
		console.Reload = func() error { return sc.reload() }
		pgCfg.Console = &console
	}
	var tokens *sessions.Verifier
	if cfg.Sessions != nil {
		if tokens, err = sessions.Open(cfg.Sessions, reg, log.With("component", "sessions")); err != nil {
			return nil, err
		}
		pgCfg.Sessions, pgCfg.SessionEnd, pgCfg.SessionEndGrace = tokens, cfg.Sessions.EndMode, cfg.Sessions.EndGrace
		redisCfg.Sessions, redisCfg.SessionEnd, redisCfg.SessionEndGrace = tokens, cfg.Sessions.EndMode, cfg.Sessions.EndGrace
	}
	store := policy.NewStore(cfg.Policy)
	pgsrv, err := proxypg.New(pgCfg, store, reg, log.With("component", "pg"))
	if err != nil {
		closeTokens(tokens)
		return nil, err
	}
	sc = &Sidecar{cfg: cfg, log: log, policy: store, pg: pgsrv, tokens: tokens, endMode: pgCfg.SessionEnd}
	startOK := false
	defer func() {
		if !startOK {
			closeTokens(tokens)
		}
	}()
	// Made now, so that its TLS files fail the start before anything
	// listens; it runs in Run.
	if sc.xds, err = sc.newPolicyClient(reg); err != nil {
		_ = pgsrv.Shutdown(context.Background())
		return nil, err
	}
	// Fail closed: with isolation on, refuse to serve a database whose
	// schema or role would let a tenant skip row-level security.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	warnings, err := pgsrv.CheckIsolation(cctx)
	cancel()
	sc.checkedTables = slices.Clone(store.Load().Tables())
	sc.checkedUpstreams = pgsrv.UpstreamKeys(store.Load())
	if err == nil {
		err = pgsrv.CheckPlacement(store.Load())
	}
	for _, w := range warnings {
		log.Warn("isolation check", "warning", w)
	}
	if err != nil {
		_ = pgsrv.Shutdown(context.Background())
		return nil, fmt.Errorf("refusing to serve: %w", err)
	}
	sc.pgLn, err = net.Listen("tcp", cfg.PostgresListen)
	if err != nil {
		_ = pgsrv.Shutdown(context.Background())
		return nil, fmt.Errorf("listen postgres: %w", err)
	}
	if cfg.RedisListen != "" {
		sc.redis, err = proxyredis.New(redisCfg, store, reg, log.With("component", "redis"))
		if err == nil {
			sc.redisLn, err = net.Listen("tcp", cfg.RedisListen)
		}
		if err == nil {
			if err = sc.checkPlacement(store.Load()); err != nil {
				_ = sc.redisLn.Close()
			}
		}
		if err != nil {
			_ = sc.pgLn.Close()
			_ = pgsrv.Shutdown(context.Background())
			return nil, fmt.Errorf("redis listener: %w", err)
		}
	}
	if cfg.AdminListen != "" {
		sc.adminLn, err = net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			_ = sc.pgLn.Close()
			_ = pgsrv.Shutdown(context.Background())
			return nil, fmt.Errorf("listen admin: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.Handle("GET /cache/pg", pgsrv.CacheHandler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("ok\n"))
		})
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !pgsrv.Ready() || (sc.redis != nil && !sc.redis.Ready()) || !sc.hasPolicy() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ready\n"))
		})
		if cfg.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		sc.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := sc.admin.Serve(sc.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener", "error", err)
			}
		}()
	}
	sc.budget = sc.newBudgetClient()
	startOK = true
	return sc, nil
}

func closeTokens(v *sessions.Verifier) {
	if v != nil {
		_ = v.Close()
	}
}

// reload is the admin console's RELOAD: the tenants and tables of the
// configuration file, re-read and checked as a pushed policy is, replace
// the policy in force. Other settings need a restart. With a control plane
// the policy is its to push, and RELOAD changes nothing.
func (sc *Sidecar) reload() error {
	if sc.xds != nil {
		return errors.New("the policy comes from the control plane: push a new version there")
	}
	if sc.cfg.Path == "" {
		return errors.New("the configuration was not read from a file")
	}
	cfg, err := config.Load(sc.cfg.Path)
	if err != nil {
		return err
	}
	snap := cfg.Policy
	if !slices.Equal(snap.Tables(), sc.checkedTables) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := sc.pg.CheckPolicy(ctx, snap); err != nil {
			return fmt.Errorf("the reloaded tables do not hold on the upstream: %w", err)
		}
		sc.checkedTables = slices.Clone(snap.Tables())
	}
	sc.SetPolicy(snap)
	sc.log.Info("configuration reloaded from the admin console", "file", sc.cfg.Path, "tenants", len(snap.TenantIDs()))
	return nil
}

// SetPolicy makes s, an already validated and compiled snapshot, the
// policy both listeners enforce. Connections of a tenant s no longer has
// (removed or suspended) are ended at once and its new logins refused from
// the moment SetPolicy returns; every other connection follows s from its
// next transaction (Postgres) or command (Redis). It does not wait for any
// client, and is safe to call at any time, concurrently with traffic and
// with itself; a nil s is ignored.
func (sc *Sidecar) SetPolicy(s *policy.Snapshot) {
	if s == nil {
		return
	}
	old := sc.policy.Swap(s)
	sc.pg.Reconcile()
	if sc.redis != nil {
		sc.redis.Reconcile()
	}
	if old != s {
		sc.log.Info("policy updated", "version", s.Version(), "previous", old.Version(), "tenants", len(s.TenantIDs()))
	}
}

// Policy returns the snapshot the listeners enforce now.
func (sc *Sidecar) Policy() *policy.Snapshot { return sc.policy.Load() }

// PostgresAddr is the address the Postgres listener is bound to.
func (sc *Sidecar) PostgresAddr() string { return sc.pgLn.Addr().String() }

// RedisAddr is the Redis listener's address, or "" if there is none.
func (sc *Sidecar) RedisAddr() string {
	if sc.redisLn == nil {
		return ""
	}
	return sc.redisLn.Addr().String()
}

// AdminAddr is the admin listener's address, or "" if there is none.
func (sc *Sidecar) AdminAddr() string {
	if sc.adminLn == nil {
		return ""
	}
	return sc.adminLn.Addr().String()
}

// PolicyReady is closed once the sidecar has a policy to enforce (at once
// with a file policy).
func (sc *Sidecar) PolicyReady() <-chan struct{} {
	if sc.xds == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return sc.xds.Ready()
}

// hasPolicy reports whether the sidecar has a policy to enforce: always
// with a file policy; from a control plane, once the first version (pushed
// or persisted) is in force.
func (sc *Sidecar) hasPolicy() bool { return sc.xds == nil || sc.xds.HasPolicy() }

// Run serves until ctx ends, then drains for up to the configured drain timeout.
func (sc *Sidecar) Run(ctx context.Context) error {
	xdsDone := make(chan struct{})
	xctx, stopXDS := context.WithCancel(context.Background())
	defer func() { stopXDS(); <-xdsDone }()
	budgetDone := make(chan struct{})
	defer func() { stopXDS(); <-budgetDone }()
	go func() {
		defer close(xdsDone)
		if sc.xds != nil {
			if err := sc.xds.Run(xctx); err != nil && xctx.Err() == nil {
				sc.log.Error("policy client stopped", "error", err)
			}
		}
	}()
	go func() {
		defer close(budgetDone)
		if sc.budget != nil {
			if err := sc.budget.rep.Run(xctx); err != nil && xctx.Err() == nil {
				sc.log.Error("budget reporter stopped", "error", err)
			}
		}
	}()
	// Memory freed after a burst (logins, parked clients) goes back to
	// the operating system instead of staying resident.
	mctx, stopMem := context.WithCancel(context.Background())
	memDone := make(chan struct{})
	go func() { defer close(memDone); memreturn.Run(mctx, 0, 0) }()
	defer func() { stopMem(); <-memDone }()
	errc := make(chan error, 2)
	go func() { errc <- sc.pg.Serve(sc.pgLn) }()
	if sc.redis != nil {
		go func() { errc <- sc.redis.Serve(sc.redisLn) }()
	}
	sc.log.Info("sidecar ready", "postgres", sc.PostgresAddr(), "redis", sc.RedisAddr(), "admin", sc.AdminAddr())
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sc.log.Info("draining", "timeout", sc.cfg.DrainTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), sc.cfg.DrainTimeout)
	defer cancel()
	err := sc.pg.Shutdown(dctx)
	if sc.budget != nil {
		sc.budget.leave() // the pools are closed: the shares can go to others
	}
	if sc.redis != nil {
		err = errors.Join(err, sc.redis.Shutdown(dctx))
	}
	if serveErr == nil {
		serveErr = <-errc
	}
	if sc.redis != nil {
		serveErr = errors.Join(serveErr, <-errc)
	}
	if sc.admin != nil {
		_ = sc.admin.Shutdown(dctx)
	}
	closeTokens(sc.tokens)
	sc.log.Info("stopped")
	return errors.Join(serveErr, err)
}
