// Package extauthzsvc wires the session store, the verifier, the session
// HTTP API and the Envoy ext_authz gRPC server together for the
// `tenantguard extauthz` command and the demo.
package extauthzsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tenantguard/tenantguard/extauthz/api"
	"github.com/tenantguard/tenantguard/extauthz/authz"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/internal/config/sections"
	"github.com/tenantguard/tenantguard/internal/sessions"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
)

// Service is a running ext_authz instance.
type Service struct {
	cfg    *sections.ExtAuthz
	log    *slog.Logger
	ver    *sessions.Verifier
	grpc   *grpc.Server
	health *health.Server
	grpcLn net.Listener
	http   *http.Server
	httpLn net.Listener

	// tenants are the tenants sessions are issued and honoured for: the
	// configuration's, or the current policy's unsuspended ones.
	tenants atomic.Pointer[map[string]bool]
	xds     *xdsclient.Client // nil unless the policy comes from a control plane

	// store and authz follow a pushed policy's sessions section; local is
	// what they follow when a policy has none (the configuration's values).
	store *session.Store
	authz *authz.Server
	local sessionSettings

	stop chan struct{}
	wg   sync.WaitGroup
}

func (s *Service) tenantAllowed(id string) bool { return (*s.tenants.Load())[id] }

// sessionSettings are the session settings ext_authz applies live.
type sessionSettings struct {
	ttl, maxAge time.Duration
	strip       bool
}

// sessionsFrom returns the settings of a pushed policy's sessions section,
// each unset or zero field (and a missing section) taking its local value.
// grace is not among them: it is the verifier's, fixed at start.
func (s *Service) sessionsFrom(p *policypb.Policy) (sessionSettings, error) {
	out := s.local
	ss := p.GetSessions()
	if ss == nil {
		return out, nil
	}
	out.strip = ss.StripsAuthorization()
	var err error
	if out.ttl, err = pushedDuration(ss.GetTtl(), "sessions.ttl", out.ttl); err != nil {
		return out, err
	}
	if out.maxAge, err = pushedDuration(ss.GetMaxAge(), "sessions.max_age", out.maxAge); err != nil {
		return out, err
	}
	return out, nil
}

// pushedDuration is d, or local when d is unset or zero.
func pushedDuration(d *durationpb.Duration, field string, local time.Duration) (time.Duration, error) {
	if d == nil {
		return local, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	if v := d.AsDuration(); v != 0 {
		return v, nil
	}
	return local, nil
}

// applyPolicy takes from a pushed policy the tenants (a suspended tenant's
// tokens are refused from now on and no session is issued for it) and the
// sessions section: strip_authorization for the next check, ttl and
// max_age for the next token issued (a session keeps the max_age it was
// created with). Grace stays the configuration's: the verifier holds it
// from start. Invalid lifetimes NACK the version, changing nothing.
func (s *Service) applyPolicy(version string, p *policypb.Policy) error {
	set, err := s.sessionsFrom(p)
	if err != nil {
		return err
	}
	// First, as the one step that can fail: nothing has changed if it does.
	if err := s.store.SetLifetimes(set.ttl, set.maxAge); err != nil {
		return fmt.Errorf("policy version %s: %w", version, err)
	}
	m := map[string]bool{}
	for _, t := range p.GetTenants() {
		if !t.GetSuspended() {
			m[t.GetId()] = true
		}
	}
	s.tenants.Store(&m)
	s.authz.SetStripAuthorization(set.strip)
	s.log.Info("policy updated", "version", version, "tenants", len(m),
		"session_ttl", set.ttl, "session_max_age", set.maxAge, "strip_authorization", set.strip)
	return nil
}

func (s *Service) hasPolicy() bool { return s.xds == nil || s.xds.HasPolicy() }

// Start listens on both addresses, ready for Run; ctx bounds the start-up
// work (a first ping of the session store, whose failure is only logged:
// readiness reports the store until it answers). It takes its arguments as
// the sidecar's and the control plane's Start do.
func Start(ctx context.Context, cfg *sections.ExtAuthz, log *slog.Logger) (*Service, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ver, err := sessions.Open(cfg.Sessions, reg, log.With("component", "sessions"))
	if err != nil {
		return nil, err
	}
	rdb := ver.RDB
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := rdb.Ping(pctx).Err(); err != nil {
		log.Warn("session store not reachable at start; checks fail closed until it is", "error", err)
	}
	cancel()
	store := session.NewStore(rdb, cfg.Sessions.SigningKey, sessions.Config(cfg.Sessions))
	s := &Service{cfg: cfg, log: log, ver: ver, store: store, stop: make(chan struct{})}
	s.local.ttl, s.local.maxAge = store.Lifetimes()
	s.local.strip = cfg.Sessions.StripAuthorization
	initial := cfg.Tenants
	s.tenants.Store(&initial)
	tenantExists := s.tenantAllowed
	apiH, err := api.New(store, cfg.AdminToken, tenantExists, log.With("component", "session-api"))
	if err != nil {
		_ = ver.Close()
		return nil, err
	}
	fail := func(err error) (*Service, error) {
		for _, ln := range []net.Listener{s.grpcLn, s.httpLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		_ = ver.Close()
		return nil, err
	}
	if s.grpcLn, err = net.Listen("tcp", cfg.GRPCListen); err != nil {
		return fail(fmt.Errorf("listen grpc: %w", err))
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return fail(fmt.Errorf("listen http: %w", err))
	}
	gopts := grpcOptions()
	if cfg.GRPCTLS != nil {
		srv, err := listenerTLS(*cfg.GRPCTLS, "grpc", reg, log)
		if err != nil {
			return fail(fmt.Errorf("tls.grpc: %w", err))
		}
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(srv.TLSConfig("h2"))))
	}
	s.grpc = grpc.NewServer(gopts...)
	s.authz = authz.New(ver, authz.Options{
		StripAuthorization: cfg.Sessions.StripAuthorization,
		TenantAllowed:      tenantExists,
	}, reg, log.With("component", "ext_authz"))
	s.authz.Register(s.grpc)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)

	mux := http.NewServeMux()
	mux.Handle("/v1/", apiH)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.hasPolicy() {
			http.Error(w, "no policy from the control plane yet", http.StatusServiceUnavailable)
			return
		}
		if !ver.Healthy() {
			http.Error(w, "session store unreachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if cp := cfg.ControlPlane; cp != nil {
		creds, err := tlsconf.GRPCClient(cp.TLS, tlsconf.Options{Name: "controlplane-client", Logger: log.With("component", "tls")}, reg)
		if err != nil {
			return fail(fmt.Errorf("controlplane.tls: %w", err))
		}
		s.xds = xdsclient.New(xdsclient.Options{
			ServerAddr: cp.Address, NodeID: cp.NodeID, Cluster: "tenantguard-extauthz", Delta: cp.Delta,
			CacheFile: cp.CacheFile, Token: cp.Token, Credentials: creds, Apply: s.applyPolicy, Logger: log.With("component", "xds"), Registerer: reg,
		})
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}
	if cfg.HTTPTLS != nil {
		srv, err := listenerTLS(*cfg.HTTPTLS, "http", reg, log)
		if err != nil {
			return fail(fmt.Errorf("tls.http: %w", err))
		}
		s.http.TLSConfig = srv.TLSConfig("h2", "http/1.1")
	}
	s.wg.Go(func() { store.ExportAnomalies(s.stop, reg, log.With("component", "session-anomaly"), 0, 0) })
	return s, nil
}

// listenerTLS is a listener's TLS configuration, its certificate's expiry
// exported under the listener's name.
func listenerTLS(files tlsconf.ServerFiles, name string, reg prometheus.Registerer, log *slog.Logger) (*tlsconf.Server, error) {
	srv, err := tlsconf.NewServer(files, tlsconf.Options{Name: name, Logger: log.With("component", "tls")})
	if err != nil {
		return nil, err
	}
	return srv, tlsconf.RegisterExpiry(reg, name, srv.NotAfter)
}

// grpcOptions tune the gRPC server for Envoy's traffic: a few long-lived
// HTTP/2 connections (one per Envoy worker) each carrying many concurrent
// Checks of about 6 KB.
func grpcOptions() []grpc.ServerOption {
	return append(authz.ServerOptions(),
		grpc.MaxRecvMsgSize(1<<20),
		// Handlers run on a pool of goroutines that keep their grown stacks,
		// instead of a new goroutine per stream that grows its stack anew
		// (stack copying was 8% of a cached check's CPU; verifying a token
		// needs about 32 KB of stack). A check that waits for the store
		// holds its worker, so the pool covers the concurrency of a few
		// Envoy connections; past it, streams get their own goroutine.
		grpc.NumStreamWorkers(uint32(max(64, 8*runtime.GOMAXPROCS(0)))),
		// Fixed windows, big enough that Envoy never waits for a
		// WINDOW_UPDATE (hundreds of requests in flight per connection),
		// turn off gRPC's bandwidth-delay probing: no BDP PING frames and
		// window updates after every few requests.
		grpc.InitialWindowSize(256<<10),
		grpc.InitialConnWindowSize(4<<20),
		// Read in bigger chunks when many requests are queued; write
		// buffers are taken from a pool only while writing, so hundreds
		// of mostly idle Envoy connections cost little memory.
		grpc.ReadBufferSize(64<<10),
		grpc.SharedWriteBuffer(true),
		grpc.MaxConcurrentStreams(1024),
	)
}

// GRPCAddr is the ext_authz gRPC address.
func (s *Service) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the session API's address.
func (s *Service) HTTPAddr() string { return s.httpLn.Addr().String() }

// healthLoop mirrors the store's reachability into the gRPC health service,
// so Envoy's health checks see an instance that can only refuse.
func (s *Service) healthLoop() {
	defer s.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if s.ver.Healthy() {
			st = healthpb.HealthCheckResponse_SERVING
		}
		if st != last {
			s.health.SetServingStatus("", st)
			s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
			if last != healthpb.HealthCheckResponse_UNKNOWN {
				s.log.Info("health", "status", st.String())
			}
			last = st
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// Run serves until ctx ends, then stops gracefully within the drain timeout.
func (s *Service) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.grpcLn) }()
	go func() { errc <- tlsconf.ServeHTTP(s.http, s.httpLn) }()
	s.wg.Add(1)
	go s.healthLoop()
	if s.xds != nil {
		xctx, cancel := context.WithCancel(context.Background())
		s.wg.Add(2)
		go func() { defer s.wg.Done(); <-s.stop; cancel() }()
		go func() {
			defer s.wg.Done()
			if err := s.xds.Run(xctx); err != nil && xctx.Err() == nil {
				s.log.Error("policy client stopped", "error", err)
			}
		}()
	}
	s.log.Info("ext_authz ready", "grpc", s.GRPCAddr(), "http", s.HTTPAddr())
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	close(s.stop)
	s.health.Shutdown()
	dctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.cfg.DrainTimeout))
	defer cancel()
	_ = s.http.Shutdown(dctx)
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-dctx.Done():
		s.grpc.Stop()
		<-done
	}
	if serveErr == nil {
		serveErr = <-errc
	}
	if err := <-errc; serveErr == nil {
		serveErr = err
	}
	s.wg.Wait()
	err := errors.Join(serveErr, s.ver.Close())
	s.log.Info("stopped")
	return err
}
