package sidecar

import (
	"context"
	"time"

	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
)

// budgetClient reports the Postgres pools' load to the control plane and
// applies the connection-budget shares it grants (proxy/pg's budget.go,
// controlplane/budget).
type budgetClient struct {
	rep *xdsclient.Reporter
}

// newBudgetClient returns the budget's reporter, or nil when the policy is
// the configuration file's (then budgets do not apply: pool.size does).
func (sc *Sidecar) newBudgetClient() *budgetClient {
	cp := sc.cfg.ControlPlane
	if cp == nil {
		return nil
	}
	sc.pg.EnableBudget()
	pg := sc.pg
	return &budgetClient{rep: xdsclient.NewReporter(xdsclient.ReporterOptions{
		ServerAddr: cp.Address, NodeID: cp.NodeID, Token: cp.Token, Credentials: sc.cpCreds,
		Load: func() []*policypb.ClusterLoad { return clusterLoads(pg.ClusterLoads()) },
		Apply: func(sh *policypb.Shares) {
			for _, c := range sh.GetClusters() {
				pg.SetClusterShare(c.GetCluster(), int(c.GetShare()))
			}
		},
		Logger: sc.log.With("component", "budget"),
	})}
}

func clusterLoads(ls []proxypg.ClusterLoad) []*policypb.ClusterLoad {
	out := make([]*policypb.ClusterLoad, len(ls))
	for i, l := range ls {
		out[i] = &policypb.ClusterLoad{Cluster: l.Cluster, Share: int32(l.Share), Held: int32(l.Held), Active: int32(l.Active), Waiting: int32(l.Waiting)}
	}
	return out
}

// leave tells the control plane this sidecar's pools are closed.
func (b *budgetClient) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b.rep.Leave(ctx)
}
