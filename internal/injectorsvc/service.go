// Package injectorsvc runs `tenantguard injector`: the mutating admission
// webhook that injects the sidecar (internal/inject) into pods, over TLS,
// with its certificate from files or self-managed through the Kubernetes
// API, and an admin listener with /metrics, /healthz and /readyz.
package injectorsvc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/inject"
	"github.com/tenantguard/tenantguard/internal/kubeapi"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// nativeSince is the first Kubernetes minor version (1.x) with native
// sidecars on by default (SidecarContainers, beta in 1.29, GA in 1.33).
const nativeSince = 29

// Service is a running injector.
type Service struct {
	cfg       *config.Injector
	sidecar   inject.Config
	log       *slog.Logger
	certs     certSource
	managed   *selfManaged // nil with a certificate from files
	webhookLn net.Listener
	adminLn   net.Listener
	webhook   *http.Server
	admin     *http.Server
	draining  atomic.Bool
}

// Start reads the certificate (creating it, when self-managed), decides
// the sidecar layout, and listens; Run serves.
func Start(ctx context.Context, cfg *config.Injector, log *slog.Logger) (*Service, error) {
	var api *kubeapi.Client
	if cfg.SelfManaged != nil || cfg.NativeAuto {
		var err error
		if api, err = kubeapi.InCluster(); err != nil {
			return nil, fmt.Errorf("%w (tls.self_managed and sidecar.native auto need the Kubernetes API: give tls.cert_file and key_file, and sidecar.native true or false)", err)
		}
	}
	return start(ctx, cfg, log, api)
}

func start(ctx context.Context, cfg *config.Injector, log *slog.Logger, api *kubeapi.Client) (*Service, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Service{cfg: cfg, sidecar: cfg.Sidecar, log: log}
	if cfg.NativeAuto {
		vctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		major, minor, err := api.ServerVersion(vctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("sidecar.native auto: %w", err)
		}
		s.sidecar.Native = major > 1 || minor >= nativeSince
		log.Info("sidecar layout from the API server's version", "version", fmt.Sprintf("%d.%d", major, minor), "native", s.sidecar.Native)
	}
	if err := s.sidecar.Validate(); err != nil {
		return nil, err
	}
	if sm := cfg.SelfManaged; sm != nil {
		m := &selfManaged{api: api, cfg: *sm, log: log.With("component", "certificates"), now: time.Now}
		if m.cfg.Namespace == "" {
			ns, err := kubeapi.PodNamespace()
			if err != nil {
				return nil, err
			}
			m.cfg.Namespace = ns
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := m.sync(sctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("webhook certificate: %w", err)
		}
		s.certs, s.managed = m, m
	} else {
		f, err := newFileCert(cfg.CertFile, cfg.KeyFile, tlsconf.Options{Name: "webhook", Logger: log.With("component", "certificates")})
		if err != nil {
			return nil, err
		}
		s.certs = f
	}
	// The injector's own name for the expiry, and every process's.
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tenantguard_injector_certificate_expiry_timestamp_seconds",
		Help: "When the webhook's serving certificate expires (Unix time).",
	}, func() float64 {
		if t := s.certs.notAfter(); !t.IsZero() {
			return float64(t.Unix())
		}
		return 0
	})
	reg.MustRegister(expiry)
	if err := tlsconf.RegisterExpiry(reg, "webhook", s.certs.notAfter); err != nil {
		return nil, err
	}

	m := newAdmissionMetrics(reg)
	mux := http.NewServeMux()
	mux.Handle(PathNamespace, &admission{sidecar: &s.sidecar, scope: inject.ScopeNamespace, log: log, m: m})
	mux.Handle(PathAnnotation, &admission{sidecar: &s.sidecar, scope: inject.ScopeAnnotation, log: log, m: m})
	s.webhook = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{GetCertificate: s.certs.GetCertificate, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug), // TLS handshake noise from probes
	}
	admin := http.NewServeMux()
	admin.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	admin.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	admin.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case s.draining.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !s.certs.Ready():
			http.Error(w, "webhook certificate not in place yet", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ready\n"))
		}
	})
	s.admin = &http.Server{Handler: admin, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}

	var err error
	if s.webhookLn, err = net.Listen("tcp", cfg.WebhookListen); err != nil {
		return nil, fmt.Errorf("listen webhook: %w", err)
	}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		_ = s.webhookLn.Close()
		return nil, fmt.Errorf("listen admin: %w", err)
	}
	return s, nil
}

// WebhookAddr is the webhook listener's address.
func (s *Service) WebhookAddr() string { return s.webhookLn.Addr().String() }

// AdminAddr is the admin listener's address.
func (s *Service) AdminAddr() string { return s.adminLn.Addr().String() }

// Sidecar is the injection template in force (native decided).
func (s *Service) Sidecar() inject.Config { return s.sidecar }

// Run serves until ctx ends. Then readiness fails, the webhook keeps
// serving for the shutdown delay, and in-flight requests get up to the
// drain timeout.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(context.Background())
	defer func() { stopBG(); wg.Wait() }()
	if s.managed != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.managed.run(bg) }()
	}
	errc := make(chan error, 2)
	go func() { errc <- tlsconf.ServeHTTP(s.webhook, s.webhookLn) }()
	go func() { errc <- tlsconf.ServeHTTP(s.admin, s.adminLn) }()
	s.log.Info("injector ready", "webhook", s.WebhookAddr(), "admin", s.AdminAddr(), "native_sidecar", s.sidecar.Native, "image", s.sidecar.Image)
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.draining.Store(true)
	if d := s.cfg.ShutdownDelay; d > 0 && serveErr == nil {
		s.log.Info("shutting down: serving on while endpoints drop this pod", "delay", d)
		t := time.NewTimer(d)
		<-t.C
	}
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	err := s.webhook.Shutdown(dctx)
	err = errors.Join(err, s.admin.Shutdown(dctx))
	if serveErr == nil {
		serveErr = <-errc
	}
	serveErr = errors.Join(serveErr, <-errc)
	s.log.Info("stopped")
	return errors.Join(serveErr, err)
}
