// Package controlplanesvc wires the policy store, the xDS server and the
// admin API together for the `tenantguard controlplane` command and the
// demo.
package controlplanesvc

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
	"github.com/tenantguard/tenantguard/controlplane/budget"
	"github.com/tenantguard/tenantguard/controlplane/fleet"
	"github.com/tenantguard/tenantguard/controlplane/lifecycle"
	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/internal/bearer"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Service is a running control plane.
type Service struct {
	cfg     *config.ControlPlane
	log     *slog.Logger
	store   *store.Store
	xds     *xds.Server
	grpc    *grpc.Server
	xdsLn   net.Listener
	http    *http.Server
	adminLn net.Listener
	audit   *auditWatch
	budget  *budget.Server
	fleet   *fleet.View // the data planes of every instance on the store
	ops     *lifecycle.Operations
	opsDone func() // closes the lifecycle's connections

	stop chan struct{}
	wg   sync.WaitGroup
}

// LoadSeed reads a policy file or directory (YAML or JSON).
func LoadSeed(path string) (*policypb.Policy, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return policypb.LoadDir(path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := policypb.ParseYAML(data) // YAML is a superset of JSON
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Start opens the store (seeding it on first start), listens on both
// addresses and starts serving.
func Start(ctx context.Context, cfg *config.ControlPlane, log *slog.Logger) (*Service, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ak := cfg.Audit
	st, err := store.Open(ctx, cfg.Database, log.With("component", "store"), store.WithAuditKeys(store.AuditKeys{
		Signing: ak.SigningKey, Verification: ak.VerificationKeys, SignedFrom: ak.SignedFrom,
	}))
	if err != nil {
		return nil, err
	}
	if ak.SigningKey != nil {
		log.Info("audit entries are signed", "key_id", ak.SigningKey.ID(), "verification_keys", len(ak.VerificationKeys)+1)
	} else {
		log.Warn("audit_key_file is not set: audit entries are hash-chained but not signed, so whoever can write to the policy database can rewrite their history undetected")
	}
	s := &Service{cfg: cfg, log: log, store: st, stop: make(chan struct{})}
	fail := func(err error) (*Service, error) {
		for _, ln := range []net.Listener{s.xdsLn, s.adminLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		if s.xds != nil {
			s.xds.Close()
		}
		if s.opsDone != nil {
			s.opsDone()
		}
		st.Close()
		return nil, err
	}
	if err := reg.Register(st); err != nil {
		return fail(err)
	}
	s.audit = &auditWatch{store: st, log: log.With("component", "audit"), every: ak.CheckInterval, fullEvery: ak.FullCheckInterval}
	if s.audit.every <= 0 { // a ControlPlane not from ParseControlPlane
		s.audit.every = config.DefaultAuditCheckInterval
	}
	if s.audit.fullEvery <= 0 {
		s.audit.fullEvery = config.DefaultAuditFullCheckInterval
	}
	if cfg.Seed != "" {
		p, err := LoadSeed(cfg.Seed)
		if err != nil {
			return fail(fmt.Errorf("seed: %w", err))
		}
		v, seeded, err := st.Seed(ctx, "seed:"+cfg.Seed, p)
		if err != nil {
			return fail(fmt.Errorf("seed %s: %w", cfg.Seed, err))
		}
		if seeded {
			log.Info("policy store seeded", "version", v.Version, "from", cfg.Seed)
		}
	}
	s.xds = xds.New(xds.Options{Logger: log.With("component", "xds"), Registerer: reg})
	if e := cfg.Envoy; e != nil {
		ec, err := envoyConfig(e)
		if err != nil {
			return fail(err)
		}
		if err := s.xds.SetEnvoy(ec); err != nil {
			return fail(fmt.Errorf("envoy resources: %w", err))
		}
	}
	s.fleet = fleet.New(s.xds, st, fleet.Options{Instance: instanceName(), Logger: log.With("component", "fleet")})
	if s.ops, s.opsDone, err = newLifecycle(cfg.Lifecycle, st, s.fleet, log.With("component", "lifecycle")); err != nil {
		return fail(err)
	}
	api, err := adminapi.New(st, cfg.AdminToken, log.With("component", "admin-api"),
		adminapi.WithOperations(s.ops, cfg.Lifecycle.MaxArchiveBytes))
	if err != nil {
		return fail(err)
	}
	if s.xdsLn, err = net.Listen("tcp", cfg.XDSListen); err != nil {
		return fail(fmt.Errorf("listen xds: %w", err))
	}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		return fail(fmt.Errorf("listen admin: %w", err))
	}
	gopts, err := s.xdsServerOptions(reg)
	if err != nil {
		return fail(err)
	}
	s.grpc = grpc.NewServer(gopts...)
	s.xds.Register(s.grpc)
	s.budget = budget.New(budget.Options{Logger: log.With("component", "budget"), Registerer: reg})
	s.budget.Register(s.grpc)
	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.xds.Version() == "" {
			http.Error(w, "no policy to serve yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}
	if cfg.AdminTLS != nil {
		srv, err := listenerTLS(*cfg.AdminTLS, "admin", reg, log)
		if err != nil {
			return fail(fmt.Errorf("tls.admin: %w", err))
		}
		s.http.TLSConfig = srv.TLSConfig("h2", "http/1.1")
	}
	return s, nil
}

// xdsServerOptions are the xDS gRPC server's options: xDS keepalives, TLS
// (tls.xds) and who may read what (xds_token, client certificates).
func (s *Service) xdsServerOptions(reg prometheus.Registerer) ([]grpc.ServerOption, error) {
	cfg, log := s.cfg, s.log
	gopts := xds.ServerOptions()
	access := xds.Access{TrustDomain: cfg.XDSTrustDomain, Logger: log.With("component", "xds")}
	if cfg.XDSTLS != nil {
		srv, err := listenerTLS(*cfg.XDSTLS, "xds", reg, log)
		if err != nil {
			return nil, fmt.Errorf("tls.xds: %w", err)
		}
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(srv.TLSConfig("h2"))))
		access.ClientCertificates = srv.VerifiesClients()
	}
	if cfg.XDSToken != "" {
		tok, err := bearer.New(cfg.XDSToken)
		if err != nil {
			return nil, fmt.Errorf("xds_token: %w", err)
		}
		access.Token = &tok
	}
	switch {
	case access.Token == nil && !access.ClientCertificates:
		log.Warn("neither xds_token nor tls.xds.client_ca_file is set: any client that reaches the xDS port can read the policy, tenants' SCRAM verifiers included")
	case cfg.XDSTLS == nil:
		log.Warn("tls.xds is not set: the xDS token and the policy travel in clear")
	}
	// Envoy reads its listeners, routes and clusters without credentials
	// (no secrets in them; the NetworkPolicy decides who reaches xDS);
	// the policy needs them.
	if cfg.Envoy != nil {
		access.Public = xds.EnvoyTypeURLs
	}
	return append(gopts, grpc.StreamInterceptor(access.StreamInterceptor())), nil
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

func envoyConfig(e *config.EnvoyAddrs) (*xds.EnvoyConfig, error) {
	split := func(field, addr string) (string, int, error) {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return "", 0, fmt.Errorf("envoy.%s: %w", field, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return "", 0, fmt.Errorf("envoy.%s: bad port %q", field, p)
		}
		return h, n, nil
	}
	var c xds.EnvoyConfig
	var err error
	if c.ListenAddr, c.ListenPort, err = split("listen", e.Listen); err != nil {
		return nil, err
	}
	if c.AppAddr, c.AppPort, err = split("app", e.App); err != nil {
		return nil, err
	}
	if c.ExtAuthzAddr, c.ExtAuthzPort, err = split("extauthz", e.ExtAuthz); err != nil {
		return nil, err
	}
	if t := e.ExtAuthzTLS; t != nil {
		c.ExtAuthzTLS = &xds.UpstreamTLS{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName}
	}
	return &c, nil
}

// XDSAddr is the xDS listener's address.
func (s *Service) XDSAddr() string { return s.xdsLn.Addr().String() }

// AdminAddr is the admin API's address.
func (s *Service) AdminAddr() string { return s.adminLn.Addr().String() }

// follow serves every new version the store reports (from this process's
// admin API or another control plane's) to the xDS server.
func (s *Service) follow() {
	defer s.wg.Done()
	ch, cancel := s.store.Subscribe()
	defer cancel()
	for {
		select {
		case <-s.stop:
			return
		case v, ok := <-ch:
			if !ok {
				return
			}
			ver := strconv.FormatInt(v.Version, 10)
			if err := s.xds.SetPolicy(ver, v.Policy); err != nil {
				s.log.Error("cannot serve policy version", "version", ver, "error", err)
				continue
			}
			s.budget.SetPolicy(v.Policy)
			s.log.Info("serving policy", "version", ver, "author", v.Author, "comment", v.Comment)
		}
	}
}

// Run serves until ctx ends, then stops within the drain timeout.
func (s *Service) Run(ctx context.Context) error {
	s.wg.Add(5) // follow, the budget, the fleet, the audit checks, the lifecycle operations
	go s.follow()
	bctx, stopBudget := context.WithCancel(context.Background())
	defer stopBudget() // on an early return too
	go func() { defer s.wg.Done(); s.budget.Run(bctx) }()
	go func() { defer s.wg.Done(); s.fleet.Run(bctx) }()
	go func() { defer s.wg.Done(); s.audit.run(s.stop) }()
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-s.stop; cancel() }()
		_ = s.ops.Run(ctx) // operations running here hand over their leases
	}()
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.xdsLn) }()
	go func() { errc <- tlsconf.ServeHTTP(s.http, s.adminLn) }()
	s.log.Info("control plane ready", "xds", s.XDSAddr(), "admin", s.AdminAddr())
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	close(s.stop)
	stopBudget()
	dctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.cfg.DrainTimeout))
	defer cancel()
	_ = s.http.Shutdown(dctx)
	// xDS streams never end by themselves: stop them at once, clients
	// reconnect to another control plane or keep their policy.
	s.grpc.Stop()
	if serveErr == nil {
		serveErr = <-errc
	}
	if err := <-errc; serveErr == nil {
		serveErr = err
	}
	s.wg.Wait()
	s.opsDone()
	s.xds.Close()
	s.store.Close()
	s.log.Info("stopped")
	return serveErr
}

// instanceName names this control-plane process among the instances
// sharing its store: host, pid and a random suffix (a pid is reused).
func instanceName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
}
