package budget

import "github.com/prometheus/client_golang/prometheus"

// metrics are the tenantguard_budget_* gauges, by cluster.
type metrics struct {
	limit, sidecars, granted, committed *prometheus.GaugeVec
	seen                                map[string]bool
}

func newMetrics(reg prometheus.Registerer) *metrics {
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tenantguard", Subsystem: "budget", Name: name, Help: help}, []string{"cluster"})
	}
	m := &metrics{
		limit:     gauge("max_server_connections", "The cluster's budget of server connections, from the policy."),
		sidecars:  gauge("sidecars", "Sidecars sharing the cluster's budget (connected, reporting)."),
		granted:   gauge("granted_connections", "Sum of the shares granted to connected sidecars."),
		committed: gauge("committed_connections", "Sum of what every sidecar may hold now (the most of its grant, its share in force and what it holds): at or under the budget."),
		seen:      map[string]bool{},
	}
	if reg != nil {
		reg.MustRegister(m.limit, m.sidecars, m.granted, m.committed)
	}
	return m
}

func (m *metrics) observe(cluster string, limit, sidecars, granted, committed int) {
	m.seen[cluster] = true
	m.limit.WithLabelValues(cluster).Set(float64(limit))
	m.sidecars.WithLabelValues(cluster).Set(float64(sidecars))
	m.granted.WithLabelValues(cluster).Set(float64(granted))
	m.committed.WithLabelValues(cluster).Set(float64(committed))
}

// forget drops the series of clusters no longer budgeted.
func (m *metrics) forget(budgets map[string][2]int) {
	for c := range m.seen {
		if _, ok := budgets[c]; !ok {
			for _, v := range []*prometheus.GaugeVec{m.limit, m.sidecars, m.granted, m.committed} {
				v.DeleteLabelValues(c)
			}
			delete(m.seen, c)
		}
	}
}
