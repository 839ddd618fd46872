package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

const (
	// PolicyTypeURL is the xDS type URL of the policy resource.
	PolicyTypeURL = policypb.TypeURL
	// PolicyResourceName is the name of the one policy resource, the
	// fleet's policy; data planes subscribe to it by name.
	PolicyResourceName = policypb.DefaultName
)

// DefaultForgetAfter is how long NodeStatus keeps a disconnected node.
const DefaultForgetAfter = time.Hour

// ErrVersionReused is returned by SetPolicy for a version that is being
// served with different contents: nodes that hold the version would never
// receive the change.
var ErrVersionReused = errors.New("policy version already served with different contents")

// Options configure a Server.
type Options struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the tenantguard_xds_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// OnStatus, if set, is called after every policy ACK or NACK with the
	// node's new status. It runs on the node's stream goroutine: it must
	// not block.
	OnStatus func(node string, st NodeStatus)
	// ForgetAfter is how long a disconnected node stays in NodeStatus;
	// 0 means DefaultForgetAfter.
	ForgetAfter time.Duration
}

// Server serves the policy (and optionally Envoy's configuration) to every
// node over ADS. Its methods are safe for concurrent use.
type Server struct {
	log     *slog.Logger
	cache   cachev3.SnapshotCache
	xds     *ads
	tracker *tracker
	m       *metrics
	ctx     context.Context // ends every stream when cancelled (Close)
	cancel  context.CancelFunc

	mu      sync.Mutex // serialises snapshot changes
	version string
	policy  *policypb.Policy // the stamped resource being served
	types   map[string]*typeResources
}

// New returns a Server with nothing to serve yet: nodes that connect wait
// until SetPolicy (or SetEnvoy) gives them something.
func New(opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.ForgetAfter <= 0 {
		opts.ForgetAfter = DefaultForgetAfter
	}
	s := &Server{log: log, types: make(map[string]*typeResources)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.m = newMetrics(opts.Registerer, log, func() float64 { return float64(s.tracker.countAcked(s.Version())) })
	s.tracker = newTracker(log, s.m, opts.OnStatus, opts.ForgetAfter)
	// ADS mode: answer a named request only with resources it names.
	s.cache = cachev3.NewSnapshotCache(true, fleetHash{}, cpLogger{log})
	logOpt := sotwv3.WithLogger(cpLogger{log})
	s.xds = &ads{
		sotw:  sotwv3.NewServer(s.ctx, s.cache, s.tracker, logOpt),
		delta: deltav3.NewServer(s.ctx, s.cache, s.tracker, logOpt),
	}
	return s
}

// ads is the Aggregated Discovery Service over go-control-plane's SotW and
// delta stream handlers, as pkg/server/v3 wires them. (pkg/server/v3
// itself also serves rate-limit configuration, whose module this one does
// not need.)
type ads struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	sotw  sotwv3.Server
	delta deltav3.Server
}

func (a *ads) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.sotw.StreamHandler(stream, resource.AnyType)
}

func (a *ads) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.delta.DeltaStreamHandler(stream, resource.AnyType)
}

// Register adds the Aggregated Discovery Service (state of the world and
// delta) to g. Create g with ServerOptions so that clients' keepalive pings
// are allowed.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// ServerOptions are the gRPC server options xDS clients expect: keepalive
// pings as often as every 10 s are allowed (the default minimum is 5 min,
// and a policy client pings every 30 s to notice a dead control plane), and
// the server pings idle connections itself.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	}
}

// SetPolicy validates p (policypb.Validate) and makes it, as version, the
// policy every node receives; streams open now get it at once. p is not
// changed: a copy named PolicyResourceName and carrying version is served.
// Setting the version being served again is a no-op if p is the same and
// ErrVersionReused if not.
func (s *Server) SetPolicy(version string, p *policypb.Policy) error {
	if version == "" {
		return errors.New("set policy: empty version")
	}
	if err := policypb.Validate(p); err != nil {
		return fmt.Errorf("set policy %s: %w", version, err)
	}
	res := proto.CloneOf(p)
	res.Name, res.Version = PolicyResourceName, version
	s.mu.Lock()
	defer s.mu.Unlock()
	if version == s.version {
		if proto.Equal(res, s.policy) {
			return nil
		}
		return fmt.Errorf("set policy %s: %w", version, ErrVersionReused)
	}
	wire, err := wireForm(res)
	if err != nil {
		return fmt.Errorf("set policy %s: %w", version, err)
	}
	t, err := newTypeResources(version, wire)
	if err != nil {
		return fmt.Errorf("set policy %s: %w", version, err)
	}
	prev := s.types[PolicyTypeURL]
	s.types[PolicyTypeURL] = t
	if err := s.publish(); err != nil {
		s.types[PolicyTypeURL] = prev
		return fmt.Errorf("set policy %s: %w", version, err)
	}
	s.version, s.policy = version, res
	s.m.policyVersion.Reset()
	s.m.policyVersion.WithLabelValues(version).Set(1)
	s.m.policyUpdates.Inc()
	s.log.Info("xds: serving policy", "version", version, "tenants", len(res.GetTenants()))
	return nil
}

// wireForm returns a message that marshals to p's fields at the cost of a
// copy. go-control-plane marshals a resource anew for every response (a
// new cachedResource per stream and push); for a policy of a hundred
// tenants that was a quarter of the server's CPU for a push to 1,000
// nodes. The copy keeps the name as a field (the cache names resources by
// GetName) and carries every other field, marshalled once, as unknown
// fields, which marshalling writes out as they are. Decoders see the
// same fields, name first.
func wireForm(p *policypb.Policy) (*policypb.Policy, error) {
	rest := proto.CloneOf(p)
	rest.Name = ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rest)
	if err != nil {
		return nil, fmt.Errorf("marshal policy: %w", err)
	}
	w := &policypb.Policy{Name: p.GetName()}
	w.ProtoReflect().SetUnknown(b)
	return w, nil
}

// SetEnvoy serves the Listener, RouteConfiguration and Clusters of cfg to
// Envoy nodes (those subscribing to those types); nil stops serving them.
// Their version is a hash of their contents, so Envoy sees a change only
// when cfg changes.
func (s *Server) SetEnvoy(cfg *EnvoyConfig) error {
	typeURLs := []string{resource.ListenerType, resource.RouteType, resource.ClusterType}
	next := make([]*typeResources, len(typeURLs))
	if cfg != nil {
		res, err := cfg.Resources()
		if err != nil {
			return fmt.Errorf("set envoy: %w", err)
		}
		for i, rs := range [][]types.ResourceWithName{res.Listeners, res.Routes, res.Clusters} {
			if next[i], err = newTypeResources("", rs...); err != nil {
				return fmt.Errorf("set envoy: %w", err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := make([]*typeResources, len(typeURLs))
	for i, t := range typeURLs {
		prev[i] = s.types[t]
		setOrDelete(s.types, t, next[i])
	}
	if err := s.publish(); err != nil {
		for i, t := range typeURLs {
			setOrDelete(s.types, t, prev[i])
		}
		return fmt.Errorf("set envoy: %w", err)
	}
	return nil
}

func setOrDelete(m map[string]*typeResources, k string, v *typeResources) {
	if v == nil {
		delete(m, k)
		return
	}
	m[k] = v
}

// publish installs a snapshot of s.types; s.mu is held.
func (s *Server) publish() error {
	snap := &snapshot{byType: make(map[string]*typeResources, len(s.types))}
	for k, v := range s.types {
		snap.byType[k] = v
	}
	return s.cache.SetSnapshot(s.ctx, fleetKey, snap)
}

// Version returns the policy version being served, "" before SetPolicy.
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// NodeStatus returns every known node's status by node id: connected nodes
// and, for Options.ForgetAfter, disconnected ones.
func (s *Server) NodeStatus() map[string]NodeStatus { return s.tracker.status() }

// Close ends every open stream (nodes reconnect, to this server if it is
// still registered and serving, or to another) and makes new ones end at
// once. Call it before grpc.Server.GracefulStop, which otherwise waits for
// streams that never end by themselves.
func (s *Server) Close() { s.cancel() }

// The resource types the server can hold; the cache asserts types.Resource.
var _ types.ResourceWithName = (*policypb.Policy)(nil)
