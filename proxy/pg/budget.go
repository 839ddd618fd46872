package pg

import (
	"slices"

	"github.com/tenantguard/tenantguard/policy"
)

// The fleet's connection budget, as this sidecar applies it.
//
// A PostgreSQL cluster whose policy entry has max_server_connections is
// shared by every sidecar: the control plane splits the budget and grants
// each sidecar a share (SetClusterShare), which caps the server
// connections this sidecar holds to that cluster across its pools. Until
// the first share arrives a budgeted cluster gets none (clients wait for
// it, then 53300), so a sidecar that has just started never takes
// connections the others hold. If the control plane goes away the last
// share stays in force. The sidecar reports what it holds and how many
// clients wait (ClusterLoads), and the control plane grows a share only
// once the shrinking sidecars report they hold no more than theirs.

// EnableBudget makes the policy's budgets apply: from now on a budgeted
// cluster is capped by the share SetClusterShare gave it (none yet: 0).
// Without it (a sidecar with no control plane) budgets are ignored and
// pool.size applies, as there is nobody to split them.
func (srv *Server) EnableBudget() {
	srv.budgets.Store(true)
	srv.applyLimits()
}

// SetClusterShare installs this sidecar's share of cluster's budget:
// connections beyond it close (idle ones now, busy ones when their
// transaction ends) and waiters may dial if it grew. A share for a
// cluster the policy does not budget is kept for when it does.
func (srv *Server) SetClusterShare(cluster string, n int) {
	srv.pmu.Lock()
	srv.shares[cluster] = max(n, 0)
	srv.pmu.Unlock()
	srv.applyLimits()
}

// limitLocked is the cap of cluster's slots under snap: its share when
// budgets apply and snap budgets it, else none (-1). Called with srv.pmu
// held.
func (srv *Server) limitLocked(cluster string, snap *policy.Snapshot) int {
	if !srv.budgets.Load() {
		return -1
	}
	c, ok := snap.Cluster(cluster)
	if !ok || c.Postgres == nil || c.Postgres.MaxServerConnections == 0 {
		return -1
	}
	return srv.shares[cluster] // 0 until granted
}

// applyLimits brings every cluster's cap in line with the policy in force
// and the shares granted, shedding or waking pools as needed.
func (srv *Server) applyLimits() {
	snap := srv.policy.Load()
	type change struct {
		cs    *clusterSlots
		pools []*pool
	}
	var changes []change
	srv.pmu.Lock()
	for _, c := range snap.Budgets() {
		srv.slotsLocked(c.Name) // report budgeted clusters before their first pool
	}
	for name, cs := range srv.slots {
		n := srv.limitLocked(name, snap)
		if cur, _ := cs.share(); cur != n || n >= 0 {
			changes = append(changes, change{cs, cs.setLimit(n)})
		}
	}
	srv.pmu.Unlock()
	for _, c := range changes {
		c.cs.rebalance(c.pools)
	}
}

// ClusterLoads reports, for every cluster the policy budgets, the share
// in force and what this sidecar's pools of it hold and need; nil when
// budgets do not apply.
func (srv *Server) ClusterLoads() []ClusterLoad {
	if !srv.budgets.Load() {
		return nil
	}
	snap := srv.policy.Load()
	var out []ClusterLoad
	for _, c := range snap.Budgets() {
		srv.pmu.Lock()
		cs := srv.slotsLocked(c.Name)
		srv.pmu.Unlock()
		cs.mu.Lock()
		l := ClusterLoad{Cluster: c.Name, Share: cs.limit, Held: cs.used}
		pools := make([]*pool, 0, len(cs.pools))
		for p := range cs.pools {
			pools = append(pools, p)
		}
		cs.mu.Unlock()
		for _, p := range pools {
			a, w := p.load()
			l.Active += a
			l.Waiting += w
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b ClusterLoad) int {
		if a.Cluster < b.Cluster {
			return -1
		}
		if a.Cluster > b.Cluster {
			return 1
		}
		return 0
	})
	return out
}
