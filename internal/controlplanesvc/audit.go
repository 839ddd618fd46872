package controlplanesvc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/controlplane/store"
)

// auditEvery is how often the control plane re-verifies the audit chain,
// so that an alert fires when someone alters the store behind its back.
const auditEvery = 5 * time.Minute

// auditWatch verifies the audit chain at start and every auditEvery, and
// exports the result.
type auditWatch struct {
	store  *store.Store
	log    *slog.Logger
	ok     prometheus.Gauge
	last   prometheus.Gauge
	checks *prometheus.CounterVec
}

func newAuditWatch(st *store.Store, reg prometheus.Registerer, log *slog.Logger) (*auditWatch, error) {
	a := &auditWatch{
		store: st,
		log:   log,
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantguard_controlplane_audit_chain_ok",
			Help: "1 if the audit chain verified at the last check, 0 if it did not (altered, deleted or inserted entries or versions).",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantguard_controlplane_audit_last_check_timestamp_seconds",
			Help: "When the audit chain was last checked to the end (Unix time), verified or not.",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_controlplane_audit_checks_total",
			Help: "Audit chain checks by result: ok, broken, or error (the store could not be read).",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "broken", "error"} {
		a.checks.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{a.ok, a.last, a.checks} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// check verifies the chain once.
func (a *auditWatch) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := a.store.VerifyAudit(ctx)
	switch {
	case err == nil:
		a.ok.Set(1)
		a.last.SetToCurrentTime()
		a.checks.WithLabelValues("ok").Inc()
	case errors.Is(err, store.ErrTampered):
		a.ok.Set(0)
		a.last.SetToCurrentTime()
		a.checks.WithLabelValues("broken").Inc()
		a.log.Error("audit chain does not verify", "verified_entries", n, "error", err)
	default:
		a.checks.WithLabelValues("error").Inc()
		if ctx.Err() == nil {
			a.log.Warn("audit chain not checked", "error", err)
		}
	}
}

// run checks at once, then every auditEvery until stop is closed.
func (a *auditWatch) run(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	a.check(ctx)
	t := time.NewTicker(auditEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			a.check(ctx)
		}
	}
}
