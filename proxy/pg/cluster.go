package pg

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// clusterSlots counts the server connections of one upstream cluster on
// this sidecar, across its pools (one per client database), against the
// cluster's share of the fleet's connection budget.
//
// A pool takes a slot before it dials and gives it back when the
// connection's read loop has exited, so used counts every connection that
// may exist upstream. With no budget (limit < 0) each pool is capped by
// pool.size alone; with one, the share caps the cluster's pools together
// and pool.size does not apply. When the share shrinks below used, idle
// connections close at once and busy ones when their transaction ends;
// nothing new is dialled until used is under the share again.
//
// Lock order: pool.mu before clusterSlots.mu. Waking other pools (wake)
// takes their mu, so it is called with no pool lock held.
type clusterSlots struct {
	name  string // "" for the configured upstream
	label string

	mu    sync.Mutex
	limit int // the share; < 0: no budget
	used  int
	pools map[*pool]struct{}

	usedGauge  prometheus.Gauge
	shareGauge prometheus.Gauge
	poolsGauge prometheus.Gauge
}

// clusterLabel is a cluster's metrics label: the configured upstream is
// "default" ("" is no label value Prometheus users expect).
func clusterLabel(name string) string {
	if name == "" {
		return "default"
	}
	return name
}

func newClusterSlots(name string, m *metrics) *clusterSlots {
	l := clusterLabel(name)
	cs := &clusterSlots{name: name, label: l, limit: -1, pools: map[*pool]struct{}{},
		usedGauge:  m.clusterConns.WithLabelValues(l),
		shareGauge: m.clusterShare.WithLabelValues(l),
		poolsGauge: m.clusterPools.WithLabelValues(l),
	}
	cs.shareGauge.Set(-1)
	return cs
}

// tryTake counts one more connection if the cluster's share allows it,
// or, with no budget, if the pool (holding total) is under poolSize.
// Called with the pool's mu held.
func (cs *clusterSlots) tryTake(total, poolSize int) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.limit >= 0 && cs.used >= cs.limit || cs.limit < 0 && total >= poolSize {
		return false
	}
	cs.used++
	cs.usedGauge.Set(float64(cs.used))
	return true
}

// give returns a slot; it reports whether a budgeted cluster is under its
// share, so that a waiter of another of its pools may dial.
func (cs *clusterSlots) give() (wake bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.used--
	cs.usedGauge.Set(float64(cs.used))
	return cs.limit >= 0 && cs.used < cs.limit && len(cs.pools) > 1
}

// excess is how many connections the cluster holds beyond its share.
func (cs *clusterSlots) excess() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.limit < 0 {
		return 0
	}
	return cs.used - cs.limit
}

// over reports whether the cluster holds more connections than its share
// (it has shrunk): a connection coming back is closed, not reused.
func (cs *clusterSlots) over() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.limit >= 0 && cs.used > cs.limit
}

// budgeted reports whether a share applies, and returns it.
func (cs *clusterSlots) share() (int, bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.limit, cs.limit >= 0
}

// setLimit installs a new share (< 0: none) and returns the pools to
// rebalance.
func (cs *clusterSlots) setLimit(n int) []*pool {
	cs.mu.Lock()
	cs.limit = n
	cs.shareGauge.Set(float64(n))
	out := make([]*pool, 0, len(cs.pools))
	for p := range cs.pools {
		out = append(out, p)
	}
	cs.mu.Unlock()
	return out
}

func (cs *clusterSlots) add(p *pool) {
	cs.mu.Lock()
	cs.pools[p] = struct{}{}
	cs.poolsGauge.Set(float64(len(cs.pools)))
	cs.mu.Unlock()
}

func (cs *clusterSlots) remove(p *pool) {
	cs.mu.Lock()
	delete(cs.pools, p)
	cs.poolsGauge.Set(float64(len(cs.pools)))
	cs.mu.Unlock()
}

// wake lets waiters in the cluster's pools dial while there are slots:
// after a slot came back or the share grew. Called with no pool lock held.
func (cs *clusterSlots) wake() {
	cs.mu.Lock()
	pools := make([]*pool, 0, len(cs.pools))
	for p := range cs.pools {
		pools = append(pools, p)
	}
	cs.mu.Unlock()
	for _, p := range pools {
		p.grantDials()
	}
}

// rebalance applies a new share to the cluster's pools: idle connections
// beyond it close now (busy ones when they come back), and if it grew,
// waiters may dial.
func (cs *clusterSlots) rebalance(pools []*pool) {
	for _, p := range pools {
		p.shed()
	}
	cs.wake()
}

// ClusterLoad is what one cluster's pools on this sidecar hold and need,
// for the control plane's budget (see SetClusterShare).
type ClusterLoad struct {
	// Cluster is the policy's cluster name.
	Cluster string
	// Share is the share in force (the last one applied); -1 when none.
	Share int
	// Held counts server connections, open or being opened.
	Held int
	// Active counts those leased to a client.
	Active int
	// Waiting counts clients waiting for a server connection.
	Waiting int
}
