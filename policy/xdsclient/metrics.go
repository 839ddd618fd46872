package xdsclient

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the client's Prometheus metrics.
type metrics struct {
	version      *prometheus.GaugeVec
	lastUpdate   prometheus.Gauge
	applySeconds prometheus.Histogram
	nacks        prometheus.Counter
	connected    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	m := &metrics{
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tenantguard_policy_version_info",
			Help: "The policy version in force (value 1, the version as a label).",
		}, []string{"version"}),
		lastUpdate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantguard_policy_last_update_timestamp_seconds",
			Help: "When the policy in force was applied (Unix time).",
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tenantguard_policy_apply_seconds",
			Help:    "Time to validate and apply a new policy version.",
			Buckets: []float64{100e-6, 250e-6, 1e-3, 2.5e-3, 10e-3, 25e-3, 100e-3, 250e-3, 1, 2.5},
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_policy_nacks_total",
			Help: "Policy versions rejected (NACKed) because they did not decode, validate or apply.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantguard_policy_connected",
			Help: "1 while an xDS stream to the control plane is open.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.version, m.lastUpdate, m.applySeconds, m.nacks, m.connected} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					log.Error("xds: register metric", "error", err)
				}
			}
		}
	}
	return m
}

// setVersion makes version the one series of tenantguard_policy_version_info.
func (m *metrics) setVersion(version string) {
	m.version.Reset()
	m.version.WithLabelValues(version).Set(1)
}
