// Package pg is tenantguard's PostgreSQL data plane: a listener that speaks
// the v3 protocol to stock clients, authenticates each connection as one
// tenant, and pools upstream connections per (database, upstream user) in
// transaction or session mode.
//
// Words: a clientConn is one client connection (clientconn.go), a
// serverConn one upstream connection (serverconn.go); "session" means only
// a token session, whose lease a clientConn may hold (ending.go), or
// PgBouncer's session pooling mode.
package pg

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	wire "github.com/tenantguard/tenantguard/wire/pg"

	"github.com/tenantguard/tenantguard/internal/netserve"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// Server is the Postgres listener. Create it with New, run Serve, stop it
// with Shutdown.
type Server struct {
	cfg     Config
	endMode *clientend.Mode
	policy  *policy.Store
	log     *slog.Logger
	metrics *metrics
	pools   map[string]*pool // the configured upstream's, by client-visible database name
	uniq    []*pool

	// Placement (placement.go) and the budget (budget.go), under pmu:
	// the cluster pools by route, each cluster's slots, and the shares
	// the control plane granted.
	pmu     sync.Mutex
	routes  map[routeKey]*pool
	slots   map[string]*clusterSlots
	shares  map[string]int
	budgets atomic.Bool
	fw      *firewall.Firewall // nil when isolation is off
	caches  resultCaches       // the pools' result caches (resultcache.go)

	mockSecret [32]byte
	secrets    secretCache // static secrets verified on cleartext logins

	acc netserve.Acceptor

	mu        sync.Mutex
	clients   map[uint32]*clientConn // by cancel pid
	perTenant map[string]int         // client connections by tenant
	labels    map[string]struct{}
	janitor   chan struct{}
	// pausedTenants are those paused (pause.go), by the console's PAUSE
	// or the policy: each channel is closed when the last reason goes.
	// Replaced, never modified, under mu; read without it. pauseReasons
	// (under mu) says why each is paused.
	pausedTenants atomic.Pointer[map[string]chan struct{}]
	pauseReasons  map[string]pauseReason
	bg            sync.WaitGroup
	readyOnce     sync.Once
}

// New builds a Server. Upstream URLs are parsed here, so a bad one fails
// before anything listens; no upstream connection is made yet.
func New(cfg Config, pol *policy.Store, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	srv := &Server{
		cfg:          cfg,
		policy:       pol,
		log:          log,
		metrics:      newMetrics(reg),
		pools:        map[string]*pool{},
		routes:       map[routeKey]*pool{},
		slots:        map[string]*clusterSlots{},
		shares:       map[string]int{},
		clients:      map[uint32]*clientConn{},
		perTenant:    map[string]int{},
		labels:       map[string]struct{}{},
		janitor:      make(chan struct{}),
		pauseReasons: map[string]pauseReason{},
	}
	srv.pausedTenants.Store(&map[string]chan struct{}{})
	srv.caches = resultCaches{srv: srv, metrics: newCacheMetrics(reg)}
	srv.endMode = clientend.NewMode(cfg.SessionEnd)
	srv.acc.Log = log
	srv.acc.MaxConns = cfg.MaxClientConns
	srv.acc.FailedHandshakesPerSecond = cfg.FailedHandshakesPerSecond
	srv.acc.Budget = cfg.ConnBudget
	srv.acc.Refuse = refuseTooMany
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "pg", Name: "accepts_paced_total",
		Help: "Times the listener waited before accepting because connections failed their handshakes faster than failed_handshakes_per_second.",
	}, func() float64 { return float64(srv.acc.Paced()) }))
	if cfg.MaxClientConnsPerSource > 0 {
		// A gateway serving many app pods: one pod must not take every
		// client slot.
		srv.acc.MaxConnsPerSource = cfg.MaxClientConnsPerSource
		srv.acc.RefuseSource = refuseTooManyFromSource(cfg.MaxClientConnsPerSource)
		registerSourceMetrics(reg, &srv.acc)
	}
	_, _ = rand.Read(srv.mockSecret[:])
	byKey := map[string]*pool{}
	for _, db := range cfg.Databases {
		conf, err := pgconn.ParseConfig(db.URL)
		if err != nil {
			return nil, fmt.Errorf("database %q: upstream url: %w", db.Name, err)
		}
		if !oneEndpoint(conf) {
			return nil, fmt.Errorf("database %q: upstream url: multiple hosts are not supported", db.Name)
		}
		// Pin what the proxy relies on when it reads and rewrites messages.
		conf.RuntimeParams["client_encoding"] = "UTF8"
		conf.RuntimeParams["standard_conforming_strings"] = "on"
		if _, ok := conf.RuntimeParams["application_name"]; !ok {
			conf.RuntimeParams["application_name"] = ""
		}
		key := fmt.Sprintf("%s@%s:%d/%s", conf.User, conf.Host, conf.Port, conf.Database)
		p := byKey[key]
		if p == nil {
			p = newPool(key, conf, &srv.cfg, log, srv.metrics, srv.slotsLocked(""))
			byKey[key] = p
			srv.uniq = append(srv.uniq, p)
		}
		srv.pools[db.Name] = p
	}
	if len(srv.pools) == 0 {
		return nil, errors.New("no databases configured")
	}
	if cfg.Binder != nil {
		fw, err := firewall.New(firewall.Config{BindingSetting: rls.Setting, ProtectedSchema: rls.Schema})
		if err != nil {
			return nil, err
		}
		srv.fw = fw
	}
	srv.bg.Add(1)
	go srv.expireLoop()
	return srv, nil
}

// oneEndpoint reports whether every way conf may connect goes to one host
// and port: sslmode=prefer (libpq's default, so a URL without sslmode) and
// allow add a fallback to the same server with TLS the other way, which
// pgconn tries by itself; several hosts are another matter (see the
// placement of tenants across clusters).
func oneEndpoint(conf *pgconn.Config) bool {
	for _, fb := range conf.Fallbacks {
		if fb.Host != conf.Host || fb.Port != conf.Port {
			return false
		}
	}
	return true
}

// Serve accepts clients on ln until Shutdown. It returns nil after Shutdown.
func (srv *Server) Serve(ln net.Listener) error {
	return srv.acc.Serve(ln, srv.serveConn)
}

func (srv *Server) serveConn(conn net.Conn) (parked bool) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := srv.startup(ctx, cancel, conn)
	if err != nil || s == nil {
		cancel()
		if err != nil {
			srv.log.Debug("client startup failed", "remote", conn.RemoteAddr().String(), "error", err)
		}
		return false
	}
	s.ctx = ctx
	s.conns = srv.metrics.clientConns.WithLabelValues(s.label)
	s.conns.Inc()
	return s.serve()
}

// tooManyClients is what a connection over max_client_connections, or
// accepted only to be shed while the process is out of file descriptors,
// is told before anything is read from it: PostgreSQL's own reply when it
// is over max_connections. libpq and pgx report an ErrorResponse sent in
// place of the SSLRequest answer or the authentication request.
var tooManyClients = wire.Fatalf(wire.CodeTooManyConnections, "sorry, too many clients already (tenantguard is at its client connection limit)").AppendTo(nil)

func refuseTooMany(c net.Conn) { _, _ = c.Write(tooManyClients) }

// refuseTooManyFromSource is refuseTooMany for a client address over
// max_client_connections_per_source.
func refuseTooManyFromSource(limit int) func(net.Conn) {
	msg := wire.Fatalf(wire.CodeTooManyConnections, "sorry, too many clients from this address already (tenantguard's max_client_connections_per_source is %d)", limit).AppendTo(nil)
	return func(c net.Conn) { _, _ = c.Write(msg) }
}

// register gives s a unique cancel key and makes it findable for cancels,
// drain and Reconcile. It refuses a tenant over its connection cap, and one
// the current snapshot no longer has, as an unknown user: checked under
// srv.mu, a login that authenticated against the previous snapshot is
// either refused here or ended by the Reconcile that follows the swap.
func (srv *Server) register(s *clientConn) *wire.Error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	snap := srv.policy.Load()
	t, ok := snap.Tenant(s.tenant)
	if !ok {
		return passwordFailed(s.tenant, "password", nil).reply
	}
	s.t, s.snap = t, snap
	if limit := s.t.Limits.MaxConnections; limit > 0 && srv.perTenant[s.tenant] >= limit {
		return wire.Fatalf(wire.CodeTooManyConnections, "too many connections for tenant %q (limit %d)", s.tenant, limit)
	}
	srv.perTenant[s.tenant]++
	for {
		s.key = newCancelKey()
		if _, taken := srv.clients[s.key.pid]; !taken && s.key.pid != 0 {
			break
		}
	}
	srv.clients[s.key.pid] = s
	if srv.acc.Draining() {
		// startup wakes the client once its deadline is cleared.
		s.closing, s.endErr = true, errShutdown
	}
	return nil
}

func (srv *Server) unregister(s *clientConn) {
	srv.mu.Lock()
	if srv.clients[s.key.pid] == s {
		delete(srv.clients, s.key.pid)
		if srv.perTenant[s.tenant]--; srv.perTenant[s.tenant] <= 0 {
			delete(srv.perTenant, s.tenant)
		}
	}
	srv.mu.Unlock()
}

// cancel forwards a client's CancelRequest to the server connection running
// that client's current request, and to nothing else.
func (srv *Server) cancel(pid uint32, secret []byte) {
	srv.mu.Lock()
	s := srv.clients[pid]
	srv.mu.Unlock()
	if s == nil || len(secret) != 4 {
		return
	}
	var want [4]byte
	binary.BigEndian.PutUint32(want[:], s.key.secret)
	if !hmac.Equal(want[:], secret) {
		srv.log.Warn("cancel request with wrong key", "pid", pid)
		return
	}
	sc := s.sc.Load()
	if sc == nil {
		return
	}
	sc.mu.Lock()
	// Only a request in flight can be cancelled; a stale cancel reaches nothing.
	if sc.owner != s || sc.replies.empty() {
		sc.mu.Unlock()
		return
	}
	if e, _ := sc.replies.front(); e.kind == wire.MsgReadyForQuery && e.swallow {
		// The proxy's own statements (settings, the tenant binding) run
		// first: a cancel landing on them could leave the client's
		// statement bound to the previous tenant. The read loop delivers
		// it once they are done (see account).
		sc.cancelPending = true
		sc.mu.Unlock()
		return
	}
	// Hold the connection until the cancel has been delivered, so it cannot
	// be handed to another client and cancel their query instead.
	sc.cancels++
	sc.mu.Unlock()
	if err := sc.pool.cancel(sc, sc.pid, sc.secret); err != nil {
		srv.log.Warn("cancel failed", "tenant", s.tenant, "session", s.key.pid, "error", err)
	}
	sc.mu.Lock()
	sc.cancels--
	sc.mu.Unlock()
	sc.release()
}

// tenantLabel bounds the tenant label's cardinality.
func (srv *Server) tenantLabel(id string) string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if _, ok := srv.labels[id]; ok {
		return id
	}
	if len(srv.labels) >= maxTenantLabels {
		return "_other"
	}
	srv.labels[id] = struct{}{}
	return id
}

// Ready reports whether the server accepts clients.
func (srv *Server) Ready() bool { return srv.acc.Listening() }

// Shutdown drains: listeners close at once, idle clients are told the proxy
// is shutting down, clients inside a transaction finish it first. When ctx
// ends, whatever is left is closed. Then the pools close.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	// Under srv.mu, so a client registering now is either in the list
	// below or sees the drain and marks itself closing.
	if srv.acc.Drain() {
		close(srv.janitor)
	}
	sessions := make([]*clientConn, 0, len(srv.clients))
	for _, s := range srv.clients {
		sessions = append(sessions, s)
	}
	srv.mu.Unlock()

	for _, s := range sessions {
		s.end(errShutdown, policy.SessionEndBoundary)
	}
	done := make(chan struct{})
	go func() {
		srv.acc.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		// Out of time: transactions still open are rolled back, and their
		// clients told why (57P01), as PostgreSQL's fast shutdown does.
		for _, s := range srv.remaining() {
			s.end(errShutdown, policy.SessionEndImmediate)
		}
		select {
		case <-done:
		case <-time.After(endWriteTimeout):
			// Whoever still hangs (a client that does not read its FATAL,
			// an upstream that does not read) is cut off.
			for _, s := range srv.remaining() {
				_ = s.conn.Close()
			}
			<-done
		}
	}
	srv.caches.close()
	all := append(slices.Clone(srv.uniq), srv.routedPools()...)
	for _, p := range all {
		p.close()
	}
	for _, p := range all {
		p.wait()
	}
	srv.bg.Wait()
	if srv.fw != nil {
		srv.fw.Close()
	}
	return err
}

// remaining lists the registered sessions.
func (srv *Server) remaining() []*clientConn {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	out := make([]*clientConn, 0, len(srv.clients))
	for _, s := range srv.clients {
		out = append(out, s)
	}
	return out
}

func (srv *Server) expireLoop() {
	defer srv.bg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-srv.janitor:
			return
		case now := <-t.C:
			srv.askIdleToPark(time.Second)
			for _, p := range srv.uniq {
				p.expire(now)
			}
			for _, p := range srv.routedPools() {
				p.expire(now)
			}
			srv.retirePools(now)
		}
	}
}
