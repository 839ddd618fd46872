package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/tenantguard/tenantguard/policy"
)

// Placement: routing each tenant's clients to its Redis upstream.
//
// The listener (a Server with no parent) serves the configured upstream
// (Config.Upstream or Config.Cluster) itself: it is the "default" route,
// used by every tenant the policy places on no Redis upstream, or on one
// that names the configured server. Each other upstream the policy places
// tenants on is served by a backend: a Server of its own, made the first
// time a client needs it, that holds everything the listener holds for its
// upstream (the shared multiplexed connections, the dedicated-connection
// pool, the breaker, the tenants' script users and connections, a Redis
// Cluster's slot map, the near cache) and nothing of the listener's (clients, rate
// buckets, verified secrets, command rules). A client's be is the Server
// its commands go to; its srv stays the listener.
//
// A backend no client has been routed to for Config.RetireAfter is
// retired: removed from the listener's map, then its connections closed.
// A client that needs that upstream again gets a new backend.
//
// A tenant whose placement changes moves at a command boundary: before its
// next command, a client with no MULTI or WATCH open waits for every reply
// it is owed, gives back its dedicated connection (reset, to the old
// upstream's pool) and sends that command, and every later one, to the new
// upstream. A client inside MULTI or WATCH moves after its EXEC, DISCARD
// or UNWATCH. State that lives on an upstream connection and cannot move
// without being lost, pub/sub subscriptions and CLIENT TRACKING, ends the
// client instead: Reconcile closes it when the policy is swapped (as for a
// removed tenant: RESP2 has no out-of-band channel), and a command it sends
// first is answered with an error saying so before it is closed. Clients
// such as go-redis's PubSub reconnect and subscribe again, now on the new
// upstream.
//
// The event loop (loop_linux.go) serves the listener's upstream only: a
// client routed to a backend serves itself on its goroutine, as every
// client of a Redis Cluster upstream does.

// routeKey names an upstream: the policy's cluster name and its
// definition, so that a changed address or seed list is a new backend
// (the old one retires). The zero key is the configured upstream.
type routeKey struct {
	cluster, def string
}

// defaultRetireAfter is Config.RetireAfter's default.
const defaultRetireAfter = 30 * time.Second

// routeOf is the route of tenant t under snap: the configured upstream
// when snap places t on no Redis upstream, or on one that is the
// configured redis-server with the configured credentials.
func (srv *Server) routeOf(snap *policy.Snapshot, t *policy.Tenant) (routeKey, *policy.RedisCluster) {
	name, c := snap.RedisCluster(t)
	if c == nil {
		return routeKey{}, nil
	}
	if !c.IsCluster() && c.Credentials == "" && srv.cfg.Upstream != "" && c.Address == srv.cfg.Upstream {
		return routeKey{}, nil
	}
	def := c.Address + "|" + strings.Join(c.Seeds, ",") + "|" + c.Credentials
	return routeKey{cluster: name, def: def}, c
}

// clusterLabel is the metrics label of a route's cluster.
func clusterLabel(name string) string {
	if name == "" {
		return "default"
	}
	return name
}

// errUnknownCredentials: a cluster names credentials this sidecar lacks.
var errUnknownCredentials = errors.New("unknown credentials")

// CheckPlacement reports whether this listener can serve snap's Redis
// placement: every Redis upstream a tenant is placed on names credentials
// this listener has (Config.Credentials), and none is a Redis Cluster
// while the near cache is on for a tenant placed there. A pushed policy
// that fails it is refused (NACKed), so that no tenant moves to an
// upstream this sidecar cannot serve.
func (srv *Server) CheckPlacement(snap *policy.Snapshot) error {
	for _, name := range snap.ClusterNames() {
		c, _ := snap.Cluster(name)
		if c.Redis == nil || c.Redis.Credentials == "" {
			continue
		}
		if _, ok := srv.cfg.Credentials[c.Redis.Credentials]; !ok {
			return fmt.Errorf("clusters: cluster %q names credentials %q, which this sidecar's configuration (redis.credentials) does not have", name, c.Redis.Credentials)
		}
	}
	for _, id := range snap.TenantIDs() {
		t, _ := snap.Tenant(id)
		name, c := snap.RedisCluster(t)
		if c.IsCluster() {
			if _, near := srv.cfg.NearCache[id]; near {
				return fmt.Errorf("tenant %q is placed on Redis Cluster %q and has a near cache (redis.near_cache): the near cache's invalidations come from one redis-server's tracking", id, name)
			}
		}
	}
	return nil
}

// backendConfig is the configuration of a backend serving c: the
// listener's, pointed at c.
func (srv *Server) backendConfig(name string, c *policy.RedisCluster) (Config, error) {
	cfg := srv.cfg
	cfg.Upstream, cfg.Cluster = c.Address, nil
	if c.IsCluster() {
		cfg.Upstream, cfg.Cluster = "", c.Seeds
	}
	if c.Credentials != "" {
		cred, ok := srv.cfg.Credentials[c.Credentials]
		if !ok {
			return cfg, fmt.Errorf("redis cluster %q: %w %q (redis.credentials in the sidecar's configuration)", name, errUnknownCredentials, c.Credentials)
		}
		cfg.UpstreamUser, cfg.UpstreamPassword = cred.User, cred.Password
	}
	return cfg, nil
}

// newBackend makes the Server serving upstream c for the listener srv.
// Nothing connects until a client sends a command.
func (srv *Server) newBackend(name string, c *policy.RedisCluster) (*Server, error) {
	cfg, err := srv.backendConfig(name, c)
	if err != nil {
		return nil, err
	}
	log := srv.log.With("cluster", name)
	be := &Server{
		cfg: cfg, parent: srv, clusterName: name, endMode: srv.endMode,
		policy: srv.policy, log: log, metrics: srv.metrics,
		verified:    map[string]verifiedSecret{},
		shares:      map[string]*tenantShare{},
		clients:     map[*clientConn]struct{}{},
		perTenant:   map[string]int{},
		labels:      map[string]struct{}{},
		sharedUp:    make([]atomic.Pointer[upConn], cfg.SharedConns),
		scriptUp:    map[scriptConnKey]*upConn{},
		scriptUsers: map[scriptUserKey]bool{},
		lpErr:       errors.New("backends do not use the event loop"),
	}
	if c.IsCluster() {
		be.cluster = newClusterUpstream(be, cfg.Cluster)
		be.cfg.NearCache = nil // refused with a Redis Cluster (CheckPlacement)
	} else if srv.near != nil {
		// Its own cache, filled from and invalidated by this upstream
		// only: an entry of one upstream is never served from another.
		if be.near, err = newNearCacheOf(be, cfg.NearCache, nil, srv.near); err != nil {
			return nil, err
		}
	}
	be.breaker = newBreaker(be)
	return be, nil
}

// newBreaker is srv's upstream circuit breaker, reporting its state under
// srv's cluster label.
func newBreaker(srv *Server) *gobreaker.CircuitBreaker[*upConn] {
	gauge := srv.metrics.breaker.WithLabelValues(clusterLabel(srv.clusterName))
	return gobreaker.NewCircuitBreaker[*upConn](gobreaker.Settings{
		Name:    srv.cfg.Upstream,
		Timeout: srv.cfg.BreakerOpenTime,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= srv.cfg.BreakerFailures
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			srv.log.Warn("redis upstream circuit breaker", "from", from.String(), "to", to.String())
			gauge.Set(float64(to))
		},
	})
}

// routeFor returns the Server that serves key, counting one more client of
// tenant on it, and making it if it is the first. The configured upstream
// is the listener itself.
func (srv *Server) routeFor(key routeKey, c *policy.RedisCluster, tenant string) (*Server, error) {
	srv.bmu.Lock()
	defer srv.bmu.Unlock()
	if srv.backendsClosed {
		return nil, errors.New("shutting down")
	}
	if key == (routeKey{}) {
		return srv, nil
	}
	be := srv.backends[key]
	if be == nil {
		var err error
		if be, err = srv.newBackend(key.cluster, c); err != nil {
			return nil, err
		}
		if srv.backends == nil {
			srv.backends = map[routeKey]*Server{}
		}
		srv.backends[key] = be
		srv.metrics.upstreamsOpened.WithLabelValues(clusterLabel(key.cluster)).Inc()
		srv.log.Info("serving a Redis upstream of the policy", "cluster", key.cluster, "upstream", be.upstreamName())
		if srv.retireTimer == nil {
			srv.retireTimer = time.AfterFunc(srv.cfg.RetireAfter/2+time.Millisecond, srv.retireBackends)
		}
	}
	be.adopt(tenant)
	return be, nil
}

// upstreamName is where srv's connections go, for logs.
func (srv *Server) upstreamName() string {
	if srv.cluster != nil {
		return "cluster " + strings.Join(srv.cfg.Cluster, ",")
	}
	return srv.cfg.Upstream
}

// adopt counts one more client of tenant routed to backend be.
func (be *Server) adopt(tenant string) {
	be.mu.Lock()
	be.routed++
	be.perTenant[tenant]++
	be.mu.Unlock()
	be.metrics.upstreamClients.WithLabelValues(clusterLabel(be.clusterName)).Inc()
}

// drop counts one client of tenant less routed to be; the tenant's script
// connections there close with its last client. A no-op on the listener,
// whose clients unregister counts.
func (be *Server) drop(tenant string) {
	if be.parent == nil {
		return
	}
	var idle []*upConn
	be.mu.Lock()
	if be.routed--; be.routed == 0 {
		be.unusedSince = time.Now()
	}
	if be.perTenant[tenant]--; be.perTenant[tenant] <= 0 {
		delete(be.perTenant, tenant)
		idle = be.tenantScriptConnsLocked(tenant)
	}
	be.mu.Unlock()
	be.metrics.upstreamClients.WithLabelValues(clusterLabel(be.clusterName)).Dec()
	for _, u := range idle {
		u.close()
	}
}

// retireBackends retires the backends no client has used for RetireAfter,
// and re-arms itself while any backend is left.
func (srv *Server) retireBackends() {
	now := time.Now()
	srv.bmu.Lock()
	if srv.backendsClosed {
		srv.bmu.Unlock()
		return
	}
	srv.retiring.Add(1) // closeBackends waits for what this closes
	defer srv.retiring.Done()
	var gone []*Server
	for key, be := range srv.backends {
		be.mu.Lock()
		unused := be.routed == 0 && now.Sub(be.unusedSince) >= srv.cfg.RetireAfter
		be.mu.Unlock()
		if unused {
			delete(srv.backends, key)
			gone = append(gone, be)
		}
	}
	srv.retireTimer = nil
	if len(srv.backends) > 0 && !srv.backendsClosed {
		srv.retireTimer = time.AfterFunc(srv.cfg.RetireAfter/2+time.Millisecond, srv.retireBackends)
	}
	srv.bmu.Unlock()
	for _, be := range gone {
		be.closeUpstreams()
		srv.metrics.upstreamsRetired.WithLabelValues(clusterLabel(be.clusterName)).Inc()
		srv.metrics.breaker.DeleteLabelValues(clusterLabel(be.clusterName))
		srv.log.Info("retired an unused Redis upstream", "cluster", be.clusterName, "upstream", be.upstreamName())
	}
}

// closeBackends closes every backend (shutdown), after every client left.
func (srv *Server) closeBackends() {
	srv.bmu.Lock()
	srv.backendsClosed = true
	if srv.retireTimer != nil {
		srv.retireTimer.Stop()
		srv.retireTimer = nil
	}
	all := srv.backends
	srv.backends = nil
	srv.bmu.Unlock()
	srv.retiring.Wait()
	for _, be := range all {
		be.closeUpstreams()
	}
}

// liveBackends lists the backends open now.
func (srv *Server) liveBackends() []*Server {
	srv.bmu.Lock()
	defer srv.bmu.Unlock()
	out := make([]*Server, 0, len(srv.backends))
	for _, be := range srv.backends {
		out = append(out, be)
	}
	return out
}

// routeStale reports whether the client's route may differ from what its
// snapshot says: the snapshot changed since the route was checked.
// Client goroutine only; a pointer comparison on the hot path.
func (s *clientConn) routeStale() bool { return s.routeSnap != s.snap }

// errTenantMoved is what a client whose connection state cannot move is
// told, before it is closed, when its tenant moved to another upstream.
func errTenantMoved(tenant string) []byte {
	return []byte("-ERR tenantguard: tenant " + tenant + " was moved to another Redis upstream; reconnect to continue there (subscriptions and client tracking cannot move)\r\n")
}

// followPlacement moves the client to its tenant's upstream under its
// snapshot, if that changed, at this command boundary. It returns
// errSessionEnded when the client was ended instead (state that cannot
// move). A client inside MULTI or WATCH stays until that ends; it is
// checked again before each command. Client goroutine only, never on the
// loop.
func (s *clientConn) followPlacement(ctx context.Context) error {
	key, c := s.srv.routeOf(s.snap, s.tenant)
	if key == s.route {
		s.routeSnap = s.snap
		return nil
	}
	if subscribedAny(s.subs) || s.track.on {
		s.srv.metrics.tenantsMoved.WithLabelValues("ended").Inc()
		s.srv.log.Info("tenant moved to another Redis upstream; ending a client whose subscriptions or tracking cannot move", "tenant", s.tenantID, "client", s.id)
		s.writeLocal(errTenantMoved(s.tenantID))
		s.flushUpstream()
		s.waitDrained()
		s.flushClient()
		s.kill()
		return errSessionEnded
	}
	if s.inMulti || s.watching || len(s.heldMulti) > 0 {
		return nil // moves after EXEC, DISCARD or UNWATCH
	}
	// Nothing may be in flight on the old upstream: every reply owed is
	// delivered first, so no command of the client runs on two upstreams
	// at once and replies stay in order.
	s.flushUpstream()
	s.waitDrained()
	nb, err := s.srv.routeFor(key, c, s.tenantID)
	if err != nil {
		s.srv.log.Error("cannot route a moved tenant's client to its new Redis upstream; closing it", "tenant", s.tenantID, "client", s.id, "cluster", key.cluster, "error", err)
		s.writeLocal([]byte("-ERR tenantguard: tenant " + s.tenantID + " was moved to a Redis upstream this proxy cannot serve\r\n"))
		s.flushClient()
		s.kill()
		return errSessionEnded
	}
	old := s.be
	if s.dedicated && s.up != nil {
		old.releaseDedicated(s.up)
	}
	s.up, s.dedicated, s.via, s.dirty = nil, false, nil, nil
	s.cache = nb.near.tenant(s.tenantID) // each upstream's own (nearcache.go)
	s.qmu.Lock()
	s.be, s.route = nb, key
	s.qmu.Unlock()
	s.routeSnap = s.snap
	old.drop(s.tenantID)
	s.srv.metrics.tenantsMoved.WithLabelValues("moved").Inc()
	s.srv.log.Info("client follows its tenant to another Redis upstream", "tenant", s.tenantID, "client", s.id,
		"from", clusterLabel(old.clusterName), "to", clusterLabel(nb.clusterName))
	return nil
}

// cannotMove reports whether the client holds upstream state that cannot
// follow its tenant (subscriptions, tracking) and the snapshot routes it
// elsewhere: Reconcile ends such a client at once. Any goroutine.
func (s *clientConn) cannotMove(snap *policy.Snapshot) bool {
	t, ok := snap.Tenant(s.tenantID)
	if !ok {
		return false
	}
	key, _ := s.srv.routeOf(snap, t)
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return key != s.route && s.pubsub
}

// movedSubscriber ends a subscribed (or tracking) client whose tenant
// moved, at once. Safe from any goroutine, more than once.
func (s *clientConn) movedSubscriber() {
	if s.removed.Swap(true) {
		return
	}
	s.srv.metrics.tenantsMoved.WithLabelValues("ended").Inc()
	s.srv.log.Info("tenant moved to another Redis upstream; closing a subscribed or tracking client (its state cannot move)", "tenant", s.tenantID, "client", s.id)
	s.end(policy.SessionEndImmediate)
}
