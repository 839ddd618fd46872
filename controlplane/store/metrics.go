package store

import "github.com/prometheus/client_golang/prometheus"

var (
	versionDesc = prometheus.NewDesc("tenantguard_controlplane_policy_version",
		"The newest policy version this control plane knows of (0: none stored).", nil, nil)
	listenerUpDesc = prometheus.NewDesc("tenantguard_controlplane_listener_up",
		"1 while the store's LISTEN connection for new versions is up.", nil, nil)
	listenerConnectsDesc = prometheus.NewDesc("tenantguard_controlplane_listener_connects_total",
		"LISTEN connections established, the first one included (more than one means reconnects).", nil, nil)
)

// Describe implements prometheus.Collector: register the Store with a
// registry to export its current version and its listener's state.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	ch <- versionDesc
	ch <- listenerUpDesc
	ch <- listenerConnectsDesc
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	up := 0.0
	if s.listenUp.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(versionDesc, prometheus.GaugeValue, float64(s.curVersion.Load()))
	ch <- prometheus.MustNewConstMetric(listenerUpDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(listenerConnectsDesc, prometheus.CounterValue, float64(s.listens.Load()))
}
