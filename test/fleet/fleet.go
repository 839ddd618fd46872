// Package fleet runs a fleet of simulated sidecars in one process for the
// connection budget's tests and benchmark: each is a real PostgreSQL
// listener (proxy/pg) with its own pools, reporting its load to a real
// Budget service (controlplane/budget) over gRPC and applying the shares
// it gets back, as `tenantguard sidecar` does with a control plane
// (internal/sidecar's budget.go). Only the policy's xDS delivery is left
// out: every sidecar starts with the policy the control plane budgets.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/tenantguard/tenantguard/controlplane/budget"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
)

// ControlPlane is the Budget service on a loopback gRPC listener.
type ControlPlane struct {
	Budget *budget.Server
	// Addr is the gRPC listener's host:port.
	Addr   string
	g      *grpc.Server
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// StartControlPlane starts the Budget service with opts, budgeting p's
// clusters.
func StartControlPlane(opts budget.Options, p *policypb.Policy) (*ControlPlane, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := budget.New(opts)
	srv.SetPolicy(p)
	g := grpc.NewServer()
	srv.Register(g)
	ctx, cancel := context.WithCancel(context.Background())
	cp := &ControlPlane{Budget: srv, Addr: ln.Addr().String(), g: g, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = g.Serve(ln) }()
	go func() { defer wg.Done(); srv.Run(ctx) }()
	go func() { wg.Wait(); close(cp.done) }()
	return cp, nil
}

// Stop ends the control plane at once: the report streams break, as when
// its process dies. It is safe to call twice.
func (cp *ControlPlane) Stop() {
	cp.once.Do(func() {
		cp.g.Stop()
		cp.cancel()
	})
	<-cp.done
}

// Granted sums the grants of cluster to sidecars the control plane counts
// (live or reclaiming).
func (cp *ControlPlane) Granted(cluster string) (sum, nodes int) {
	for _, s := range cp.Budget.Shares() {
		if s.Cluster == cluster {
			sum += s.Granted
			nodes++
		}
	}
	return sum, nodes
}

// SidecarOptions configure one simulated sidecar.
type SidecarOptions struct {
	// ID is the node id it reports under.
	ID string
	// ControlPlane is the Budget service's address.
	ControlPlane string
	// Config is the Postgres listener's configuration.
	Config proxypg.Config
	// Policy is the policy in force (it names the budgeted clusters).
	Policy *policy.Snapshot
	// ReportInterval is how often it reports besides after each share.
	ReportInterval time.Duration
	// Backoff bounds the reporter's reconnection waits.
	Backoff xdsclient.Backoff
	// Logger receives its logs; nil discards them.
	Logger *slog.Logger
}

// Sidecar is one simulated sidecar: a Postgres listener and its reporter.
type Sidecar struct {
	ID string
	// Addr is the Postgres listener's host:port.
	Addr    string
	PG      *proxypg.Server
	rep     *xdsclient.Reporter
	cancel  context.CancelFunc
	served  chan error
	stopped chan struct{}
	once    sync.Once
	err     error
}

// StartSidecar starts a sidecar with budgets on: it holds no server
// connection of a budgeted cluster until the control plane grants a share.
func StartSidecar(o SidecarOptions) (*Sidecar, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pg, err := proxypg.New(o.Config, policy.NewStore(o.Policy), prometheus.NewRegistry(), log.With("node", o.ID))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = pg.Shutdown(context.Background())
		return nil, err
	}
	pg.EnableBudget()
	rep := xdsclient.NewReporter(xdsclient.ReporterOptions{
		ServerAddr: o.ControlPlane, NodeID: o.ID, Interval: o.ReportInterval, Backoff: o.Backoff,
		Load: func() []*policypb.ClusterLoad {
			ls := pg.ClusterLoads()
			out := make([]*policypb.ClusterLoad, len(ls))
			for i, l := range ls {
				out[i] = &policypb.ClusterLoad{Cluster: l.Cluster, Share: int32(l.Share), Held: int32(l.Held), Active: int32(l.Active), Waiting: int32(l.Waiting)}
			}
			return out
		},
		Apply: func(sh *policypb.Shares) {
			for _, c := range sh.GetClusters() {
				pg.SetClusterShare(c.GetCluster(), int(c.GetShare()))
			}
		},
		Logger: log.With("node", o.ID, "component", "budget"),
	})
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sidecar{ID: o.ID, Addr: ln.Addr().String(), PG: pg, rep: rep, cancel: cancel,
		served: make(chan error, 1), stopped: make(chan struct{})}
	go func() { s.served <- pg.Serve(ln) }()
	go func() {
		defer close(s.stopped)
		if err := rep.Run(ctx); err != nil {
			log.Error("reporter", "node", o.ID, "error", err)
		}
	}()
	return s, nil
}

// Load returns what the sidecar holds of cluster and the share in force
// (-1 before the first).
func (s *Sidecar) Load(cluster string) proxypg.ClusterLoad {
	for _, l := range s.PG.ClusterLoads() {
		if l.Cluster == cluster {
			return l
		}
	}
	return proxypg.ClusterLoad{Cluster: cluster, Share: -1}
}

// Leave stops the sidecar as `tenantguard sidecar` stops: its listener
// drains and its pools close, then it tells the control plane it has
// gone. It is safe to call twice and returns the first call's error.
func (s *Sidecar) Leave(ctx context.Context) error {
	s.once.Do(func() {
		err := s.PG.Shutdown(ctx)
		if serr := <-s.served; serr != nil {
			err = errors.Join(err, serr)
		}
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		s.rep.Leave(lctx)
		cancel()
		s.cancel()
		<-s.stopped
		if err != nil {
			s.err = fmt.Errorf("sidecar %s: %w", s.ID, err)
		}
	})
	return s.err
}
