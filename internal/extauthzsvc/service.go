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
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tenantguard/tenantguard/extauthz/api"
	"github.com/tenantguard/tenantguard/extauthz/authz"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/sessions"
)

// Service is a running ext_authz instance.
type Service struct {
	cfg    *config.ExtAuthz
	log    *slog.Logger
	ver    *sessions.Verifier
	grpc   *grpc.Server
	health *health.Server
	grpcLn net.Listener
	http   *http.Server
	httpLn net.Listener

	stop chan struct{}
	wg   sync.WaitGroup
}

// Start listens on both addresses and starts serving.
func Start(cfg *config.ExtAuthz, log *slog.Logger) (*Service, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ver, err := sessions.Open(cfg.Sessions, reg, log.With("component", "sessions"))
	if err != nil {
		return nil, err
	}
	rdb := ver.RDB
	store := session.NewStore(rdb, cfg.Sessions.SigningKey, sessions.Config(cfg.Sessions))
	tenantExists := func(id string) bool { return cfg.Tenants[id] }
	apiH, err := api.New(store, cfg.AdminToken, tenantExists, log.With("component", "session-api"))
	if err != nil {
		_ = ver.Close()
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, ver: ver, stop: make(chan struct{})}
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
	s.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(1 << 20))
	authv3.RegisterAuthorizationServer(s.grpc, authz.New(ver, authz.Options{
		StripAuthorization: cfg.Sessions.StripAuthorization,
		TenantAllowed:      tenantExists,
	}, reg, log.With("component", "ext_authz")))
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)

	mux := http.NewServeMux()
	mux.Handle("/v1/", apiH)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ver.Healthy() {
			http.Error(w, "session store unreachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}
	s.wg.Go(func() { store.ExportAnomalies(s.stop, reg, log.With("component", "session-anomaly"), 0, 0) })
	return s, nil
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
	go func() {
		err := s.http.Serve(s.httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	s.wg.Add(1)
	go s.healthLoop()
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
