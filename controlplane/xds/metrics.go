package xds

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// metrics are the server's Prometheus metrics. The "type" label is a short
// name of the resource type (typeLabel), so a client asking for made-up
// type URLs cannot grow the label set.
type metrics struct {
	streams       *prometheus.GaugeVec   // protocol: sotw, delta
	responses     *prometheus.CounterVec // type
	acks          *prometheus.CounterVec // type
	nacks         *prometheus.CounterVec // type
	policyVersion *prometheus.GaugeVec   // version
	policyUpdates prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, log *slog.Logger, nodesAcked func() float64) *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tenantguard_xds_streams",
			Help: "Open ADS streams by protocol (sotw: state of the world, delta: incremental).",
		}, []string{"protocol"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_xds_responses_total",
			Help: "xDS responses pushed to nodes, by resource type (policy, listener, route, cluster, other).",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_xds_acks_total",
			Help: "xDS responses nodes accepted (ACK), by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_xds_nacks_total",
			Help: "xDS responses nodes rejected (NACK), by resource type.",
		}, []string{"type"}),
		policyVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tenantguard_xds_policy_version_info",
			Help: "The policy version being served (value 1, the version as a label).",
		}, []string{"version"}),
		policyUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_xds_policy_updates_total",
			Help: "New policy versions installed with SetPolicy.",
		}),
	}
	// Pre-create the usual series so that they read 0 rather than missing.
	for _, p := range []string{protocolSotW, protocolDelta} {
		m.streams.WithLabelValues(p)
	}
	for _, t := range []string{"policy", "listener", "route", "cluster"} {
		m.responses.WithLabelValues(t)
		m.acks.WithLabelValues(t)
		m.nacks.WithLabelValues(t)
	}
	if reg != nil {
		current := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tenantguard_xds_nodes_current",
			Help: "Connected nodes whose last policy ACK is for the version being served.",
		}, nodesAcked)
		for _, c := range []prometheus.Collector{m.streams, m.responses, m.acks, m.nacks, m.policyVersion, m.policyUpdates, current} {
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

// Protocols, the "protocol" label of tenantguard_xds_streams.
const (
	protocolSotW  = "sotw"
	protocolDelta = "delta"
)

// typeLabel is the "type" label for a type URL.
func typeLabel(typeURL string) string {
	switch typeURL {
	case PolicyTypeURL:
		return "policy"
	case resource.ListenerType, resource.ClusterType, resource.RouteType, resource.EndpointType, resource.SecretType:
		name := typeURL[strings.LastIndexByte(typeURL, '.')+1:]
		return strings.ToLower(strings.TrimSuffix(name, "Configuration"))
	}
	return "other"
}
