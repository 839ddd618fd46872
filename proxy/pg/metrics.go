package pg

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Postgres listener's Prometheus collectors. Tenant labels
// are bounded: tenants beyond the first maxTenantLabels seen share "_other".
type metrics struct {
	clientConns   *prometheus.GaugeVec
	serverConns   *prometheus.GaugeVec
	poolWait      prometheus.Histogram
	txDuration    *prometheus.HistogramVec
	queryDur      *prometheus.HistogramVec
	errors        *prometheus.CounterVec
	breakerState  *prometheus.GaugeVec
	authFailures  *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	waiting       *prometheus.GaugeVec
	sessionsEnded *prometheus.CounterVec
	parked        prometheus.Gauge
	// Per upstream cluster (placement): connections held, the budget share
	// in force, pools open, pools retired.
	clusterConns *prometheus.GaugeVec
	clusterShare *prometheus.GaugeVec
	clusterPools *prometheus.GaugeVec
	poolsRetired *prometheus.CounterVec
	tenantsMoved *prometheus.CounterVec
}

const maxTenantLabels = 200

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		clientConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "client_connections",
			Help: "Authenticated client connections, by tenant.",
		}, []string{"tenant"}),
		serverConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "server_connections",
			Help: "Upstream server connections, by pool and state (idle, active).",
		}, []string{"pool", "state"}),
		poolWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "pool_wait_seconds",
			Help:    "Time a client waited for a server connection.",
			Buckets: []float64{.00005, .0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
		}),
		txDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "transaction_duration_seconds",
			Help:    "Time a client held a server connection (one transaction in transaction pooling).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"tenant"}),
		queryDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "query_duration_seconds",
			Help:    "Time from a client's request to the server's ReadyForQuery.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"tenant"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "errors_total",
			Help: "Errors sent to clients, by tenant and SQLSTATE class.",
		}, []string{"tenant", "class"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "breaker_state",
			Help: "Upstream circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}, []string{"pool"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "auth_failures_total",
			Help: "Failed client authentications, by reason: password, token_invalid, token_expired, token_revoked, store_unavailable, database, limit, protocol, refused.",
		}, []string{"reason"}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "sessions_ended_total",
			Help: "Client connections the proxy ended: logged in with a session token that ended (reason revoked_or_expired, store_unavailable), or of a tenant the policy no longer has (tenant_removed); session-pooled clients of a tenant the policy pauses (tenant_paused) and transactions of a paused tenant past the pause drain timeout (pause_drain_timeout).",
		}, []string{"reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "refusals_total",
			Help: "Statements refused by the firewall or the tenant's policy, by tenant and rule.",
		}, []string{"tenant", "rule"}),
	}
	m.waiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "tenantguard", Subsystem: "pg", Name: "pool_waiting_clients",
		Help: "Clients waiting for a server connection, by pool.",
	}, []string{"pool"})
	m.parked = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "tenantguard", Subsystem: "pg", Name: "parked_clients",
		Help: "Idle client connections parked: no goroutine or buffer until they send again.",
	})
	m.clusterConns = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "tenantguard", Subsystem: "pg", Name: "cluster_server_connections",
		Help: "Upstream server connections held (open or being opened), by cluster (\"default\": the configured upstream).",
	}, []string{"cluster"})
	m.clusterShare = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "tenantguard", Subsystem: "pg", Name: "cluster_share",
		Help: "This sidecar's share of the cluster's connection budget, as last granted by the control plane; -1 when the cluster has no budget.",
	}, []string{"cluster"})
	m.clusterPools = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "tenantguard", Subsystem: "pg", Name: "cluster_pools",
		Help: "Pools open, by cluster: one per client database whose tenants are placed there.",
	}, []string{"cluster"})
	m.poolsRetired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "pg", Name: "pools_retired_total",
		Help: "Cluster pools closed after they had no clients and no connections, or their cluster left the policy.",
	}, []string{"cluster"})
	m.tenantsMoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "pg", Name: "client_moves_total",
		Help: "Client connections that followed their tenant's new placement, by outcome: moved (at a transaction boundary) or ended (session pooling).",
	}, []string{"outcome"})
	reg.MustRegister(m.clusterConns, m.clusterShare, m.clusterPools, m.poolsRetired, m.tenantsMoved)
	reg.MustRegister(m.parked, m.sessionsEnded, m.waiting, m.refusals, m.clientConns, m.serverConns, m.poolWait, m.txDuration, m.queryDur, m.errors, m.breakerState, m.authFailures)
	return m
}

// registerSourceMetrics adds the per-source gauges of a listener with
// max_client_connections_per_source (gateway mode): how many addresses
// have connections open, and how many connections were refused for being
// over the cap. Counts, not a label per address: a gateway's clients are
// many pods whose addresses come and go.
func registerSourceMetrics(reg prometheus.Registerer, acc interface {
	Sources() int
	RefusedPerSource() int64
}) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "client_sources",
			Help: "Client IP addresses with connections open (counted with max_client_connections_per_source).",
		}, func() float64 { return float64(acc.Sources()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg", Name: "clients_refused_per_source_total",
			Help: "Client connections refused for being over max_client_connections_per_source.",
		}, func() float64 { return float64(acc.RefusedPerSource()) }),
	)
}
