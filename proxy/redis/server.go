package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/tenantguard/tenantguard/internal/netserve"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// Server is the Redis listener.
type Server struct {
	cfg     Config
	endMode *clientend.Mode
	policy  *policy.Store
	log     *slog.Logger
	metrics *metrics
	breaker *gobreaker.CircuitBreaker[*upConn]
	// rulesPolicy is the command policy every client's next command
	// follows; SetCommandRules swaps it. Never modified once stored.
	rulesPolicy atomic.Pointer[rules.Policy]

	ids atomic.Int64

	mu        sync.Mutex
	verified  map[string]verifiedSecret // see checkSecret
	verSnap   *policy.Snapshot          // the snapshot that verified what verified holds
	shares    map[string]*tenantShare   // the listener's tenants: rate buckets, traffic
	acc       netserve.Acceptor
	clients   map[*clientConn]struct{}
	perTenant map[string]int
	labels    map[string]struct{}
	sharedUp  []atomic.Pointer[upConn] // written under mu, read without it
	dedicated int
	lp        *loop // started by the first client that may use it
	lpErr     error
	idle      []idleConn // reset dedicated connections, newest last (pool.go)
	// idleReported is len(idle) as last added to the gauge (pool.go).
	idleReported int
	// scriptUp holds the tenants' script connections, scriptUsers the
	// tenants whose script user this process has set up (scripts.go).
	scriptUp    map[scriptConnKey]*upConn
	scriptUsers map[scriptUserKey]bool
	scripts     scriptCache
	info        infoCache   // what INFO read last (info.go)
	sweeper     *time.Timer // closes idle ones past their time
	version     string
	near        *nearCache // nil: no tenant has a near cache
	readers     sync.WaitGroup
	// cluster is the Redis Cluster upstream (cluster.go); nil for one
	// redis-server, whose path does not look at it beyond this nil check.
	cluster *clusterUpstream

	// parent is the listener a backend serves an upstream of the policy's
	// placement for, nil on the listener (placement.go); clusterName is the
	// policy's name of that upstream ("" on the listener).
	parent      *Server
	clusterName string
	// On a backend, under mu: the clients routed to it, and since when
	// none is.
	routed      int
	unusedSince time.Time
	// On the listener, under bmu: the backends by route.
	bmu            sync.Mutex
	backends       map[routeKey]*Server
	backendsClosed bool
	retireTimer    *time.Timer
	retiring       sync.WaitGroup // retireBackends closing backends
}

// New builds a Server; nothing connects until the first client.
func New(cfg Config, pol *policy.Store, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.Upstream == "" && len(cfg.Cluster) == 0:
		return nil, errors.New("redis upstream address (or cluster seeds) is required")
	case cfg.Upstream != "" && len(cfg.Cluster) > 0:
		return nil, errors.New("redis upstream: a server address or cluster seeds, not both")
	case len(cfg.Cluster) > 0 && len(cfg.NearCache) > 0:
		// Its invalidations come from one redis-server's tracking.
		return nil, errors.New("redis near cache: not available with a Redis Cluster upstream")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	srv := &Server{
		cfg: cfg, policy: pol, log: log, metrics: newMetrics(reg),
		verified:    map[string]verifiedSecret{},
		shares:      map[string]*tenantShare{},
		clients:     map[*clientConn]struct{}{},
		perTenant:   map[string]int{},
		labels:      map[string]struct{}{},
		sharedUp:    make([]atomic.Pointer[upConn], cfg.SharedConns),
		scriptUp:    map[scriptConnKey]*upConn{},
		scriptUsers: map[scriptUserKey]bool{},
		endMode:     clientend.NewMode(cfg.SessionEnd),
	}
	if len(cfg.Cluster) > 0 {
		srv.cluster = newClusterUpstream(srv, cfg.Cluster)
	}
	srv.SetCommandRules(!cfg.DisableScripting, cfg.Emulate)
	near, err := newNearCache(srv, cfg.NearCache, reg)
	if err != nil {
		return nil, err
	}
	srv.near = near
	srv.acc.Log = log
	srv.acc.MaxConns = cfg.MaxClientConns
	srv.acc.FailedHandshakesPerSecond = cfg.FailedHandshakesPerSecond
	srv.acc.Budget = cfg.ConnBudget
	srv.acc.Refuse = func(c net.Conn) { _, _ = c.Write(maxClientsReached) }
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "accepts_paced_total",
		Help: "Times the listener waited before accepting because connections failed their handshakes faster than failed_handshakes_per_second.",
	}, func() float64 { return float64(srv.acc.Paced()) }))
	srv.breaker = newBreaker(srv)
	return srv, nil
}

// SetCommandRules makes allowScripting and emulate (as Config's
// AllowScripting and Emulate) the command rules of every client from its
// next command on, open connections included. emulate is copied.
func (srv *Server) SetCommandRules(allowScripting bool, emulate map[string]bool) {
	srv.rulesPolicy.Store(&rules.Policy{AllowScripting: allowScripting, Emulate: maps.Clone(emulate)})
}

// Serve accepts clients on ln until Shutdown.
func (srv *Server) Serve(ln net.Listener) error {
	return srv.acc.Serve(ln, func(c net.Conn) bool { srv.serveConn(c); return false })
}

func (srv *Server) serveConn(c net.Conn) {
	if c = srv.acceptTLS(c); c == nil {
		return
	}
	s := &clientConn{srv: srv, conn: c, sock: newSock(c), id: srv.ids.Add(1), wake: make(chan handoff, 1)}
	s.crd = clientReader{conn: c, sock: s.sock}
	s.rd = resp.NewReader(&s.crd, 16<<10)
	s.cond = sync.NewCond(&s.qmu)
	srv.mu.Lock()
	if srv.acc.Draining() {
		// Accepted just before the listener closed, after Shutdown took
		// (under srv.mu, as it drained) its list of clients to end: never
		// served, so it cannot keep the drain waiting.
		srv.mu.Unlock()
		_ = c.Close()
		return
	}
	srv.clients[s] = struct{}{}
	srv.mu.Unlock()
	err := s.run(context.Background())
	srv.log.Debug("redis session ended", "id", s.id, "error", err)
	if s.tenantID == "" && err != nil && err != errQuit && !errors.Is(err, io.EOF) {
		// Never bound to a tenant: garbage, a frame too large, a partial
		// one held to the auth timeout. Counts towards accept pacing
		// (failed_handshakes_per_second); a client that closes without
		// a word (a TCP probe) does not.
		srv.acc.HandshakeFailed()
	}
}

// maxClientsReached is redis-server's own reply to a connection over
// maxclients, written before anything is read from it.
var maxClientsReached = []byte("-ERR max number of clients reached\r\n")

// register binds a client to a tenant of the current snapshot, enforcing
// connection caps. It returns the tenant's policy and the snapshot it came
// from, or a RESP error text when refused: a tenant the snapshot no longer
// has is refused as a wrong password. Checked under srv.mu, an AUTH that
// verified against the previous snapshot is either refused here or ended
// by the Reconcile that follows the swap.
func (srv *Server) register(s *clientConn, id string) (*policy.Tenant, *policy.Snapshot, string) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	snap := srv.policy.Load()
	t, ok := snap.Tenant(id)
	if !ok {
		srv.metrics.authFailures.WithLabelValues("password").Inc()
		return nil, nil, wrongpass
	}
	if lim := t.Limits.MaxConnections; lim > 0 && srv.perTenant[t.ID] >= lim {
		return nil, nil, fmt.Sprintf("ERR max number of clients reached for tenant %s (limit %d)", t.ID, lim)
	}
	srv.perTenant[t.ID]++
	s.tenantID = t.ID
	srv.metrics.clients.WithLabelValues(srv.tenantLabelLocked(t.ID)).Inc()
	return t, snap, ""
}

// unbind undoes register for a client that could not be bound after all.
func (srv *Server) unbind(s *clientConn) {
	srv.mu.Lock()
	if srv.perTenant[s.tenantID]--; srv.perTenant[s.tenantID] <= 0 {
		delete(srv.perTenant, s.tenantID)
	}
	srv.metrics.clients.WithLabelValues(srv.tenantLabelLocked(s.tenantID)).Dec()
	s.tenantID = ""
	srv.mu.Unlock()
}

func (srv *Server) unregister(s *clientConn) {
	var idle []*upConn
	srv.mu.Lock()
	delete(srv.clients, s)
	if s.tenantID != "" {
		if srv.perTenant[s.tenantID]--; srv.perTenant[s.tenantID] <= 0 {
			delete(srv.perTenant, s.tenantID)
			// The tenant's last client here: its script connections go.
			idle = srv.tenantScriptConnsLocked(s.tenantID)
		}
		srv.metrics.clients.WithLabelValues(s.label).Dec()
	}
	srv.mu.Unlock()
	for _, u := range idle {
		u.close()
	}
}

func (srv *Server) tenantLabel(id string) string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.tenantLabelLocked(id)
}

func (srv *Server) tenantLabelLocked(id string) string {
	if _, ok := srv.labels[id]; ok {
		return id
	}
	if len(srv.labels) >= 200 {
		return "_other"
	}
	srv.labels[id] = struct{}{}
	return id
}

// shared returns the shared connection i, dialling it if needed (which
// one a client uses: lane.go).
func (srv *Server) shared(ctx context.Context, i int) (*upConn, error) {
	if u := srv.sharedUp[i].Load(); u != nil {
		return u, nil
	}
	u, err := srv.dialUpstream(ctx, false)
	if err != nil {
		return nil, err
	}
	srv.mu.Lock()
	if srv.acc.Draining() {
		srv.mu.Unlock()
		u.closeNoReader()
		return nil, errors.New("shutting down")
	}
	if cur := srv.sharedUp[i].Load(); cur != nil {
		srv.mu.Unlock()
		u.closeNoReader()
		return cur, nil
	}
	srv.sharedUp[i].Store(u)
	srv.mu.Unlock()
	if l := srv.loop(); l == nil || !l.joinUp(u) {
		srv.startReader(u)
	}
	return u, nil
}

// startReader runs u's readLoop.
func (srv *Server) startReader(u *upConn) {
	u.readerDone = make(chan struct{})
	srv.mu.Lock()
	srv.readers.Add(1)
	srv.mu.Unlock()
	go func() {
		defer srv.readers.Done()
		u.readLoop()
	}()
}

// dedicatedConn returns an upstream connection owned by one client: a
// pooled one (pool.go), or a new one.
// On a cluster, addr is the node it connects to.
func (srv *Server) dedicatedConn(ctx context.Context, s *clientConn, addr string) (*upConn, error) {
	srv.mu.Lock()
	if srv.dedicated >= srv.cfg.MaxDedicated {
		srv.mu.Unlock()
		return nil, fmt.Errorf("%w (limit %d)", errTooManyStateful, srv.cfg.MaxDedicated)
	}
	srv.dedicated++
	srv.mu.Unlock()
	if srv.cluster == nil {
		addr = srv.cfg.Upstream
	}
	if u := srv.takeIdle(ctx, s, addr); u != nil {
		return u, nil
	}
	var u *upConn
	var err error
	if srv.cluster != nil {
		u, err = srv.cluster.dial(ctx, addr, s.resp3)
	} else {
		u, err = srv.dialUpstream(ctx, s.resp3)
	}
	if err != nil {
		srv.mu.Lock()
		srv.dedicated--
		srv.mu.Unlock()
		return nil, err
	}
	u.dedicated = s
	srv.startReader(u)
	return u, nil
}

// sharedConns returns the shared connections open now (nil for those
// that are not).
func (srv *Server) sharedConns() []*upConn {
	out := make([]*upConn, len(srv.sharedUp))
	for i := range srv.sharedUp {
		out[i] = srv.sharedUp[i].Load()
	}
	return out
}

// upstreamLost forgets a failed shared connection; clients on it move to
// a new one on their next command. ref is the reference the replies it
// failed carry.
func (srv *Server) upstreamLost(u *upConn, err error, ref string) {
	srv.mu.Lock()
	for i := range srv.sharedUp {
		srv.sharedUp[i].CompareAndSwap(u, nil)
	}
	for k, x := range srv.scriptUp {
		if x == u {
			delete(srv.scriptUp, k)
		}
	}
	// Clients on it notice through errUpstreamClosed on their next send.
	srv.mu.Unlock()
	if srv.cluster != nil && u.dedicated == nil {
		srv.cluster.lost(u)
	}
	if !errors.Is(err, net.ErrClosed) {
		srv.log.Warn("redis upstream connection lost", "ref", ref, "error", err)
	}
}

func (srv *Server) upstreamVersion() string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.version == "" {
		return "7.0.0"
	}
	return srv.version
}

// loop returns the event loop, starting it on first use; nil if there is
// none (not Linux, or it could not start: clients then serve themselves).
func (srv *Server) loop() *loop {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.lp == nil && srv.lpErr == nil {
		if srv.acc.Draining() || srv.cluster != nil {
			return nil
		}
		srv.lp, srv.lpErr = newLoop(srv)
		if srv.lpErr != nil && !errors.Is(srv.lpErr, errNoLoop) {
			srv.log.Warn("redis event loop unavailable; every session serves itself", "error", srv.lpErr)
		}
	}
	return srv.lp
}

// Ready reports whether the server accepts clients.
func (srv *Server) Ready() bool { return srv.acc.Listening() }

// Shutdown stops accepting, closes clients once ctx ends or they leave,
// and closes upstream connections.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	srv.acc.Drain()
	var sessions []*clientConn
	for s := range srv.clients {
		sessions = append(sessions, s)
	}
	srv.mu.Unlock()
	// Each client ends at its next boundary, as a token session does in
	// boundary mode (ending.go): once every reply owed is written and no
	// MULTI is open. An open MULTI block runs to its EXEC or DISCARD; no
	// command starts after the boundary; a subscriber ends at once.
	for _, s := range sessions {
		s.end(policy.SessionEndBoundary)
	}
	done := make(chan struct{})
	go func() { srv.acc.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, s := range sessions {
			s.kill()
			s.qmu.Lock()
			s.outq.clear()
			s.cond.Broadcast()
			s.qmu.Unlock()
		}
		<-done
	}
	srv.closeBackends()
	srv.closeUpstreams()
	return err
}

// closeUpstreams closes srv's upstream connections: shared, pooled,
// scripts', the cluster's and the event loop's. Every client routed to srv
// has left.
func (srv *Server) closeUpstreams() {
	srv.acc.Drain() // a backend's: no shared connection is dialled after this
	srv.closeIdle()
	if srv.cluster != nil {
		srv.cluster.close()
	}
	srv.mu.Lock()
	shared := srv.sharedConns()
	for k, u := range srv.scriptUp {
		shared = append(shared, u)
		delete(srv.scriptUp, k)
	}
	lp := srv.lp
	srv.lpErr = errors.New("shut down") // no loop starts after this
	srv.mu.Unlock()
	for _, u := range shared {
		if u != nil {
			u.close()
		}
	}
	if lp != nil {
		lp.stop() // every client has ended: none is the loop's
	}
	srv.near.close()
	srv.readers.Wait()
	for _, u := range shared {
		if u != nil {
			_ = u.conn.Close() // the loop may have stopped before reading its end
		}
	}
}
