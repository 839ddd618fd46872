package budget

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Defaults of Options.
const (
	DefaultReclaimAfter = 5 * time.Second
	DefaultInterval     = 500 * time.Millisecond
	maxClustersReported = 1024
)

// Options configure a Server.
type Options struct {
	// ReclaimAfter is how long a sidecar whose stream broke keeps its
	// commitment (its connections may still be open): then its share goes
	// to the others. It is also how long a started control plane grants
	// no growth, while the fleet reconnects and reports what it holds.
	ReclaimAfter time.Duration
	// Interval is how often shares are recomputed besides after every
	// report.
	Interval time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the tenantguard_budget_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Server is the Budget service: it takes the sidecars' load reports and
// pushes each its shares. Create it with New, register it on the xDS
// gRPC server, give it the policy with SetPolicy, run it with Run.
type Server struct {
	opts    Options
	log     *slog.Logger
	m       *metrics
	started time.Time
	kick    chan struct{}

	mu      sync.Mutex
	budgets map[string][2]int // cluster -> {max, min}
	nodes   map[string]*node
	streams uint64
	// seq is the last Shares.seq sent; it starts at the start time in
	// nanoseconds, so that a restarted control plane numbers above what
	// its predecessor sent.
	seq uint64
}

// node is one sidecar as the allocator sees it.
type node struct {
	id      string
	stream  uint64 // the stream that owns it; a reconnection takes it over
	live    bool
	goneAt  time.Time
	leaving bool
	loads   map[string]*policypb.ClusterLoad
	granted map[string]int
	out     chan *policypb.Shares // the latest shares to send; capacity 1
	// unacked are the Shares sent (or queued) that the sidecar has not
	// acknowledged yet (LoadReport.applied_seq), oldest first: until it
	// does, any of them may be the one in force, so it is counted at
	// their most (a growth replaced by a shrink may still arrive).
	unacked []sentShares
}

// sentShares is one Shares sent to a sidecar.
type sentShares struct {
	seq    uint64
	grants map[string]int
}

// maxUnacked bounds node.unacked: older entries are merged (their
// most, acknowledged with the newest of them), which only counts a
// sidecar higher for longer.
const maxUnacked = 16

// inFlight is the most of cluster's unacknowledged grants to n; 0 if none.
func (n *node) inFlight(cluster string) int {
	m := 0
	for _, u := range n.unacked {
		m = max(m, u.grants[cluster])
	}
	return m
}

// acked drops the Shares the sidecar acknowledged: those numbered up to
// seq. A sidecar that does not number them (seq 0 with a share in force
// equal to every grant) acknowledges all, as before the numbering.
func (n *node) acked(seq uint64, loads map[string]*policypb.ClusterLoad) {
	if seq == 0 {
		for c, g := range n.granted {
			if l := loads[c]; l == nil || int(l.GetShare()) != g {
				return
			}
		}
		if len(n.granted) > 0 {
			n.unacked = n.unacked[:0]
		}
		return
	}
	i := 0
	for i < len(n.unacked) && n.unacked[i].seq <= seq {
		i++
	}
	n.unacked = append(n.unacked[:0], n.unacked[i:]...)
}

// remember records sh, about to be queued for n.
func (n *node) remember(sh *policypb.Shares) {
	g := make(map[string]int, len(sh.GetClusters()))
	for _, c := range sh.GetClusters() {
		g[c.GetCluster()] = int(c.GetShare())
	}
	if len(n.unacked) == maxUnacked {
		a, b := n.unacked[0], n.unacked[1]
		for c, v := range a.grants {
			b.grants[c] = max(b.grants[c], v)
		}
		n.unacked = append(n.unacked[:0], n.unacked[1:]...)
		n.unacked[0] = b
	}
	n.unacked = append(n.unacked, sentShares{seq: sh.GetSeq(), grants: g})
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.ReclaimAfter <= 0 {
		opts.ReclaimAfter = DefaultReclaimAfter
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	return &Server{opts: opts, log: log, m: newMetrics(opts.Registerer), started: now, seq: uint64(now.UnixNano()),
		kick: make(chan struct{}, 1), budgets: map[string][2]int{}, nodes: map[string]*node{}}
}

// Register adds the Budget service to g (the xDS server's, behind its token).
func (s *Server) Register(g grpc.ServiceRegistrar) { policypb.RegisterBudgetServer(g, s) }

// SetPolicy takes the budgets of p, the policy being served.
func (s *Server) SetPolicy(p *policypb.Policy) {
	b := map[string][2]int{}
	for _, c := range p.GetClusters() {
		if pg := c.GetPostgres(); pg != nil && pg.GetMaxServerConnections() > 0 {
			b[c.GetName()] = [2]int{int(pg.GetMaxServerConnections()), int(pg.GetMinPerSidecar())}
		}
	}
	s.mu.Lock()
	s.budgets = b
	s.mu.Unlock()
	s.poke()
}

func (s *Server) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run recomputes shares after every report and every Interval until ctx
// ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		s.recompute(time.Now())
	}
}

// Report serves one sidecar's stream.
func (s *Server) Report(stream grpc.BidiStreamingServer[policypb.LoadReport, policypb.Shares]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id := first.GetNodeId()
	if id == "" || len(id) > 512 {
		return status.Error(codes.InvalidArgument, "the first load report must name the node (node_id, at most 512 bytes)")
	}
	out := make(chan *policypb.Shares, 1)
	s.mu.Lock()
	s.streams++
	gen := s.streams
	n := s.nodes[id]
	if n == nil {
		n = &node{id: id, granted: map[string]int{}}
		s.nodes[id] = n
	}
	// A reconnection keeps the grants: the sidecar kept its shares.
	n.stream, n.live, n.leaving, n.out = gen, true, false, out
	s.mu.Unlock()
	s.log.Info("sidecar reports load", "node", id)
	if err := s.take(id, gen, first); err != nil {
		return err
	}

	ctx := stream.Context()
	sendErr := make(chan error, 1)
	go func() { // owned by this handler: it ends with the stream's context
		for {
			select {
			case <-ctx.Done():
				sendErr <- ctx.Err()
				return
			case sh := <-out:
				if err := stream.Send(sh); err != nil {
					sendErr <- err
					return
				}
			}
		}
	}()
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err == nil {
				err = s.take(id, gen, r)
			}
			if err != nil {
				recvErr <- err
				return
			}
		}
	}()
	select {
	case err = <-recvErr:
	case err = <-sendErr:
	}
	s.mu.Lock()
	if n := s.nodes[id]; n != nil && n.stream == gen {
		n.live, n.goneAt, n.out = false, time.Now(), nil
	}
	s.mu.Unlock()
	s.poke()
	s.log.Info("sidecar stopped reporting", "node", id, "error", err)
	return nil
}

// take records one report of node id's stream gen.
func (s *Server) take(id string, gen uint64, r *policypb.LoadReport) error {
	if rid := r.GetNodeId(); rid != "" && rid != id {
		return status.Error(codes.InvalidArgument, "node_id changed on the stream")
	}
	if len(r.GetClusters()) > maxClustersReported {
		return status.Errorf(codes.InvalidArgument, "more than %d clusters in a report", maxClustersReported)
	}
	loads := make(map[string]*policypb.ClusterLoad, len(r.GetClusters()))
	for _, l := range r.GetClusters() {
		if l.GetHeld() < 0 || l.GetActive() < 0 || l.GetWaiting() < 0 || l.GetShare() < -1 {
			return status.Error(codes.InvalidArgument, "negative count in a load report")
		}
		loads[l.GetCluster()] = l
	}
	s.mu.Lock()
	n := s.nodes[id]
	if n == nil || n.stream != gen {
		s.mu.Unlock()
		return errors.New("superseded by a newer stream of the node")
	}
	n.loads, n.leaving = loads, r.GetLeaving()
	n.acked(r.GetAppliedSeq(), loads)
	s.mu.Unlock()
	s.poke()
	return nil
}

// recompute grants every live sidecar its shares and sends the changed
// ones; it drops sidecars whose commitment is reclaimed.
func (s *Server) recompute(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, n := range s.nodes {
		if n.live {
			continue
		}
		if now.Sub(n.goneAt) >= s.opts.ReclaimAfter || n.leaving && heldNothing(n) {
			delete(s.nodes, id)
		}
	}
	hold := now.Sub(s.started) < s.opts.ReclaimAfter
	changed := map[*node]bool{}
	names := make([]string, 0, len(s.budgets))
	for c := range s.budgets {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, cluster := range names {
		b := s.budgets[cluster]
		loads := make([]nodeLoad, 0, len(s.nodes))
		for _, n := range s.nodes {
			nl := nodeLoad{id: n.id, granted: n.granted[cluster], inFlight: n.inFlight(cluster), share: -1, live: n.live && !n.leaving}
			if l := n.loads[cluster]; l != nil {
				nl.share, nl.held = int(l.GetShare()), int(l.GetHeld())
				nl.demand = int(l.GetActive()) + int(l.GetWaiting())
			}
			if n.leaving && n.live {
				// Going: it gets nothing more, and is counted at what it holds.
				nl.live = false
				if n.granted[cluster] != 0 {
					n.granted[cluster] = 0
					changed[n] = true
				}
			}
			loads = append(loads, nl)
		}
		grants := allocate(b[0], b[1], loads, hold)
		sum, committed, live := 0, 0, 0
		for _, nl := range loads {
			committed += nl.commitment()
		}
		for id, g := range grants {
			n := s.nodes[id]
			live++
			sum += g
			if old, ok := n.granted[cluster]; !ok || old != g {
				n.granted[cluster] = g
				changed[n] = true
			}
		}
		s.m.observe(cluster, b[0], live, sum, committed)
	}
	for n := range changed {
		if n.out == nil {
			continue
		}
		s.seq++
		sh := &policypb.Shares{Seq: s.seq}
		for _, cluster := range names {
			if g, ok := n.granted[cluster]; ok {
				sh.Clusters = append(sh.Clusters, &policypb.ClusterShare{Cluster: cluster, Share: int32(g)})
			}
		}
		n.remember(sh)
		select { // the latest shares replace any not yet sent
		case <-n.out:
		default:
		}
		n.out <- sh
	}
	s.m.forget(s.budgets)
}

func heldNothing(n *node) bool {
	for _, l := range n.loads {
		if l.GetHeld() > 0 {
			return false
		}
	}
	return true
}

// Share is a sidecar's grant of one cluster, for tests and the console.
type Share struct {
	Node, Cluster string
	Granted       int
	Live          bool
}

// Shares lists every known sidecar's grants.
func (s *Server) Shares() []Share {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Share
	for _, n := range s.nodes {
		for c, g := range n.granted {
			out = append(out, Share{Node: n.id, Cluster: c, Granted: g, Live: n.live})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Cluster != out[j].Cluster {
			return out[i].Cluster < out[j].Cluster
		}
		return out[i].Node < out[j].Node
	})
	return out
}
