// Package fleet shares, between control-plane instances on one store, what
// the data planes connected to each accepted. Replicas of the control
// plane run behind one address (as istiod's do), so the sidecars of a
// fleet are spread over them; an operation that waits until every sidecar
// has accepted a policy version (provision, move) must see them all, not
// only those connected to the instance that runs it.
//
// Each instance publishes its own nodes' status to the store every
// Interval and reads the others'. A View's NodeStatus is the instance's
// own (live) status merged with the others' last published; an instance
// that stops publishing (crashed, cut off from the store) ages out after
// Fresh, as its sidecars reconnect elsewhere.
package fleet

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/xds"
)

// Defaults of Options.
const (
	DefaultInterval = time.Second
	DefaultFresh    = 5 * time.Second
)

// Local is the instance's own xDS server.
type Local interface {
	NodeStatus() map[string]xds.NodeStatus
}

// Store is where instances publish.
type Store interface {
	PublishFleet(ctx context.Context, instance string, nodes []store.FleetNode) error
	WithdrawFleet(ctx context.Context, instance string) error
	Fleet(ctx context.Context, except string, fresh time.Duration) ([]store.FleetNode, error)
}

// Options configure a View.
type Options struct {
	Instance string        // this instance's name, unique among the instances
	Interval time.Duration // how often to publish and read; DefaultInterval if 0
	Fresh    time.Duration // how long another instance's rows count; DefaultFresh if 0
	Logger   *slog.Logger
}

// View is the fleet as one instance sees it.
type View struct {
	local Local
	st    Store
	o     Options

	mu     sync.Mutex
	others []store.FleetNode
	read   bool // others has been read at least once
}

// New returns the view of the instance whose xDS server is local.
func New(local Local, st Store, o Options) *View {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Fresh <= 0 {
		o.Fresh = DefaultFresh
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &View{local: local, st: st, o: o}
}

// Run publishes and reads every Interval until ctx ends, then withdraws
// this instance's rows.
func (v *View) Run(ctx context.Context) {
	tick := time.NewTicker(v.o.Interval)
	defer tick.Stop()
	failing := false
	for {
		err := v.sync(ctx)
		if err != nil && ctx.Err() == nil && !failing {
			v.o.Logger.Warn("cannot share the fleet's status with other control planes; operations wait for the last known", "error", err)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := v.st.WithdrawFleet(wctx, v.o.Instance); err != nil {
				v.o.Logger.Debug("withdraw fleet", "error", err)
			}
			cancel()
			return
		case <-tick.C:
		}
	}
}

// sync publishes this instance's nodes and reads the others'.
func (v *View) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, v.o.Interval*2)
	defer cancel()
	local := v.local.NodeStatus()
	nodes := make([]store.FleetNode, 0, len(local))
	for id, st := range local {
		nodes = append(nodes, store.FleetNode{Node: id, Streams: st.Streams, Policy: st.Policy,
			AckedVersion: st.AckedVersion, LastAck: st.LastAck, NackedVersion: st.NackedVersion,
			LastNack: st.LastNack, LastError: st.LastError})
	}
	if err := v.st.PublishFleet(ctx, v.o.Instance, nodes); err != nil {
		return err
	}
	others, err := v.st.Fleet(ctx, v.o.Instance, v.o.Fresh)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.others, v.read = others, true
	v.mu.Unlock()
	return nil
}

// NodeStatus is every data plane of the fleet: this instance's own, live,
// and the other instances' as last published. A node connected to more
// than one instance (it moved, or an old stream has not been noticed as
// closed yet) counts its streams on all of them and the newest of what it
// accepted and rejected.
func (v *View) NodeStatus() map[string]xds.NodeStatus {
	out := v.local.NodeStatus()
	v.mu.Lock()
	others := v.others
	v.mu.Unlock()
	for _, n := range others {
		st, seen := out[n.Node]
		if !seen {
			out[n.Node] = xds.NodeStatus{Streams: n.Streams, Policy: n.Policy, AckedVersion: n.AckedVersion,
				LastAck: n.LastAck, NackedVersion: n.NackedVersion, LastNack: n.LastNack, LastError: n.LastError}
			continue
		}
		st.Streams += n.Streams
		st.Policy = st.Policy || n.Policy
		if newer(n.AckedVersion, n.LastAck, st.AckedVersion, st.LastAck) {
			st.AckedVersion, st.LastAck = n.AckedVersion, n.LastAck
		}
		if newer(n.NackedVersion, n.LastNack, st.NackedVersion, st.LastNack) {
			st.NackedVersion, st.LastNack, st.LastError = n.NackedVersion, n.LastNack, n.LastError
		}
		out[n.Node] = st
	}
	return out
}

// newer reports whether version a (at ta) is later than version b (at
// tb): by number, policy versions being increasing integers, else by time.
func newer(a string, ta time.Time, b string, tb time.Time) bool {
	na, errA := strconv.ParseInt(a, 10, 64)
	nb, errB := strconv.ParseInt(b, 10, 64)
	if errA == nil && errB == nil && na != nb {
		return na > nb
	}
	if b == "" {
		return a != ""
	}
	return ta.After(tb)
}

// Ready reports whether the other instances' status has been read once
// (until then an operation sees only this instance's nodes).
func (v *View) Ready() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.read
}
