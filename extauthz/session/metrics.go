package session

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a verification, the "result" label of
// tenantguard_session_verifications_total.
const (
	resultOK          = "ok"     // confirmed by the store
	resultCached      = "cached" // confirmed by a cached verdict
	resultInvalid     = "invalid"
	resultExpired     = "expired"
	resultRevoked     = "revoked"
	resultUnavailable = "unavailable"
)

// metrics are the Verifier's Prometheus metrics.
type metrics struct {
	verifications *prometheus.CounterVec
	cacheHits     prometheus.Counter
	storeLookups  prometheus.Counter
	revocations   prometheus.Counter
	leases        prometheus.Gauge
	storeUp       prometheus.Gauge
	flushErrors   prometheus.Counter
	droppedPrints prometheus.Counter
	byResult      map[string]prometheus.Counter
	tenants       *tenantCounters
}

// newMetrics creates the metrics and registers them with reg (if not nil).
// Metrics another Verifier already registered with reg are shared, so two
// verifiers can run in one process.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	var m metrics
	var err error
	counter := func(dst *prometheus.Counter, name, help string) {
		if err == nil {
			*dst, err = registered(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
		}
	}
	gauge := func(dst *prometheus.Gauge, name, help string) {
		if err == nil {
			*dst, err = registered(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
		}
	}
	m.verifications, err = registered(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantguard_session_verifications_total",
		Help: "Session token verifications by result: ok (confirmed by the store), cached, invalid, expired, revoked, unavailable.",
	}, []string{"result"}))
	counter(&m.cacheHits, "tenantguard_session_cache_hits_total", "Verifications answered from the verdict cache.")
	counter(&m.storeLookups, "tenantguard_session_store_lookups_total", "Session lookups sent to the session store (verdict cache misses).")
	counter(&m.revocations, "tenantguard_session_revocations_received_total", "Revocation messages received from the session store.")
	gauge(&m.leases, "tenantguard_session_open_leases", "Data-plane connections currently holding a session lease.")
	gauge(&m.storeUp, "tenantguard_session_store_up", "1 while the revocation subscription to the session store is up.")
	counter(&m.flushErrors, "tenantguard_session_analytics_flush_errors_total", "Analytics flushes to the session store that failed (retried a second later).")
	counter(&m.droppedPrints, "tenantguard_session_analytics_fingerprints_dropped_total",
		"Statement fingerprints not counted because a session sent more distinct ones within one flush interval than are kept.")
	if err == nil {
		m.tenants, err = registered(reg, newTenantCounters())
	}
	if err != nil {
		return nil, fmt.Errorf("session metrics: %w", err)
	}
	m.byResult = make(map[string]prometheus.Counter)
	for _, r := range []string{resultOK, resultCached, resultInvalid, resultExpired, resultRevoked, resultUnavailable} {
		m.byResult[r] = m.verifications.WithLabelValues(r)
	}
	return &m, nil
}

// registered registers c with reg, or returns the equal collector that is
// already registered there.
func registered[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
