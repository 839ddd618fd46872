package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// fleet is N simulated data planes, each its own ADS stream subscribed to
// the policy, spread over shared gRPC connections. A simulated data plane
// decodes each policy and ACKs it; it does not validate or compile it (a
// real sidecar does that on its own CPU, see policy/xdsclient's apply
// histogram), so the numbers are the control plane's fan-out.
type fleet struct {
	conns []*grpc.ClientConn

	mu     sync.Mutex
	rounds map[string]*round // by version
	errs   chan error
}

// round collects the ACKs of one version.
type round struct {
	start time.Time       // when the version was posted
	acks  []time.Duration // ACK time of each client after start
	all   chan struct{}   // closed when every client ACKed
	n     int             // clients
}

func newFleet(n int) *fleet {
	return &fleet{rounds: make(map[string]*round), errs: make(chan error, n)}
}

// start connects n clients over ceil(n/perConn) connections to addr; they
// run until ctx ends. Call expect first for the version they will get.
func (f *fleet) start(ctx context.Context, addr string, n, perConn int, delta bool) error {
	for i := 0; i < n; i += perConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			return err
		}
		f.conns = append(f.conns, cc)
	}
	for i := range n {
		ads := discovery.NewAggregatedDiscoveryServiceClient(f.conns[i/perConn])
		node := &core.Node{Id: fmt.Sprintf("bench-%05d", i), Cluster: "bench"}
		go func() {
			var err error
			if delta {
				err = runDelta(ctx, ads, node, f.acked)
			} else {
				err = runSotW(ctx, ads, node, f.acked)
			}
			if ctx.Err() == nil {
				f.errs <- fmt.Errorf("client %s: %v", node.GetId(), err)
			}
		}()
	}
	return nil
}

func (f *fleet) close() {
	for _, cc := range f.conns {
		cc.Close()
	}
}

// expect prepares to collect the ACKs of version from n clients; start is
// set by begin.
func (f *fleet) expect(version string, n int) *round {
	r := &round{all: make(chan struct{}), n: n, acks: make([]time.Duration, 0, n)}
	f.mu.Lock()
	f.rounds[version] = r
	f.mu.Unlock()
	return r
}

// begin marks the round's start, just before the version is pushed.
func (f *fleet) begin(r *round) {
	f.mu.Lock()
	r.start = time.Now()
	f.mu.Unlock()
}

// acked is called by a client right after it sent its ACK of version.
func (f *fleet) acked(version string) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rounds[version]
	if r == nil || len(r.acks) == r.n {
		return
	}
	r.acks = append(r.acks, now.Sub(r.start))
	if len(r.acks) == r.n {
		close(r.all)
	}
}

// wait waits until every client ACKed r's version, a client failed, or
// the timeout passed.
func (f *fleet) wait(ctx context.Context, r *round, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.all:
		return nil
	case err := <-f.errs:
		return err
	case <-t.C:
		f.mu.Lock()
		defer f.mu.Unlock()
		return fmt.Errorf("only %d of %d clients ACKed within %s", len(r.acks), r.n, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runSotW is one state-of-the-world client.
func runSotW(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient, node *core.Node, acked func(string)) error {
	stream, err := ads.StreamAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	names := []string{policypb.DefaultName}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: policypb.TypeURL, ResourceNames: names}); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if len(resp.GetResources()) != 1 {
			return fmt.Errorf("%d resources in a response", len(resp.GetResources()))
		}
		if _, err := decode(resp.GetResources()[0]); err != nil {
			return err
		}
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: policypb.TypeURL, ResourceNames: names,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
		acked(resp.GetVersionInfo())
	}
}

// runDelta is one incremental client.
func runDelta(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient, node *core.Node, acked func(string)) error {
	stream, err := ads.DeltaAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: policypb.TypeURL,
		ResourceNamesSubscribe: []string{policypb.DefaultName}}); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if len(resp.GetResources()) != 1 {
			return fmt.Errorf("%d resources in a response", len(resp.GetResources()))
		}
		if _, err := decode(resp.GetResources()[0].GetResource()); err != nil {
			return err
		}
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: policypb.TypeURL, ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
		acked(resp.GetSystemVersionInfo())
	}
}

func decode(a *anypb.Any) (*policypb.Policy, error) {
	p := &policypb.Policy{}
	if err := proto.Unmarshal(a.GetValue(), p); err != nil {
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	return p, nil
}
