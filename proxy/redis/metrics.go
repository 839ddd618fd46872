package redis

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	clients       *prometheus.GaugeVec
	commands      *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	authFailures  *prometheus.CounterVec
	sessionsEnded *prometheus.CounterVec
	breaker       *prometheus.GaugeVec
	tlsRefused    *prometheus.CounterVec
	bulky         *prometheus.CounterVec

	dedicatedIdle     prometheus.Gauge
	dedicatedReleases *prometheus.CounterVec
	clusterRedirects  *prometheus.CounterVec

	// Placement (placement.go), by the policy's cluster name ("default":
	// the configured upstream).
	upstreamsOpened  *prometheus.CounterVec
	upstreamsRetired *prometheus.CounterVec
	upstreamClients  *prometheus.GaugeVec
	tenantsMoved     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "client_connections",
			Help: "Authenticated Redis client connections, by tenant.",
		}, []string{"tenant"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "commands_total",
			Help: "Commands received from authenticated clients, by tenant.",
		}, []string{"tenant"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "refusals_total",
			Help: "Commands refused, by tenant and rule.",
		}, []string{"tenant", "rule"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "command_duration_seconds",
			Help:    "Time from forwarding a command to delivering its reply.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10),
		}, []string{"tenant"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "auth_failures_total",
			Help: "Failed AUTH/HELLO AUTH attempts, by reason: password, token_invalid, token_expired, token_revoked, store_unavailable.",
		}, []string{"reason"}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "sessions_ended_total",
			Help: "Client connections the proxy ended: authenticated with a session token that ended (reason revoked_or_expired, store_unavailable), of a tenant the policy no longer has (tenant_removed), or not reading their replies (output_limit, write_timeout).",
		}, []string{"reason"}),
		dedicatedIdle: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "dedicated_idle_connections",
			Help: "Dedicated upstream connections reset and kept for the next stateful client.",
		}),
		dedicatedReleases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "dedicated_releases_total",
			Help: "Dedicated upstream connections given up by their client, by what became of them: pooled (reset and kept), closed_owed (a reply was still owed), reset_failed (RESET or its check failed), closed (pool full, disabled or shutting down).",
		}, []string{"result"}),
		tlsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "tls_refused_total",
			Help: "Client connections refused by a TLS listener, by reason: plaintext (no TLS handshake where TLS is required), handshake (a failed handshake: protocol, certificate, timeout).",
		}, []string{"reason"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "redis", Name: "breaker_state",
			Help: "Upstream circuit breaker state, by cluster (the policy's name of the upstream; default: the configured one): 0 closed, 1 half-open, 2 open.",
		}, []string{"cluster"}),
	}
	m.bulky = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "bulky_total",
		Help: "Times a tenant turned bulky (a command or reply of 16 KiB or more after 10 s without one), so that its clients left the first shared upstream connection for the others, by tenant.",
	}, []string{"tenant"})
	m.clusterRedirects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "cluster_redirects_total",
		Help: "MOVED and ASK replies of Redis Cluster nodes, by kind (moved, ask) and outcome: replayed (on the target node, unseen by the client) or refused (on a connection that may hold state: the client got -TRYAGAIN).",
	}, []string{"kind", "outcome"})
	m.upstreamsOpened = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "upstreams_opened_total",
		Help: "Redis upstreams of the policy's placement (other than the configured one) the listener began serving, by cluster.",
	}, []string{"cluster"})
	m.upstreamsRetired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "upstreams_retired_total",
		Help: "Redis upstreams of the policy's placement closed after no client used them for redis.retire_after, by cluster.",
	}, []string{"cluster"})
	m.upstreamClients = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "upstream_clients",
		Help: "Client connections routed to a Redis upstream of the policy's placement (other than the configured one), by cluster.",
	}, []string{"cluster"})
	m.tenantsMoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "tenant_moves_total",
		Help: "Client connections whose tenant's Redis placement changed, by result: moved (to the new upstream at a command boundary), ended (subscriptions or client tracking cannot move).",
	}, []string{"result"})
	reg.MustRegister(m.upstreamsOpened, m.upstreamsRetired, m.upstreamClients, m.tenantsMoved)
	reg.MustRegister(m.clients, m.commands, m.refusals, m.latency, m.authFailures, m.sessionsEnded, m.breaker, m.tlsRefused,
		m.dedicatedIdle, m.dedicatedReleases, m.clusterRedirects, m.bulky)
	return m
}
