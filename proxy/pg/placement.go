package pg

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/policy"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// Placement: routing each client to its tenant's cluster.
//
// A client is served by the pool of (its database, its tenant's
// PostgreSQL cluster). The configured upstream (cluster "") has the pools
// New builds from Config.Databases; a named cluster's pools are built the
// first time a client needs one (placement resolved from the policy in
// force), from the client database's configured URL with the cluster's
// hosts, database, role and password put in, and are retired once no
// client is routed to them and their connections have closed.
//
// A tenant whose placement changes moves at a transaction boundary: in
// transaction pooling, a client's next transaction after the change
// attaches a connection from the new cluster's pool (attach, between
// transactions only, so no transaction spans two clusters); its LISTEN
// registrations move with it. In session pooling the server connection
// holds the client's session state (temporary tables, prepared statements,
// settings made with SET, advisory locks) and cannot move: the client is
// ended at its next transaction boundary with FATAL 57P01 saying the
// tenant moved, and reconnects to the new cluster.

// routeKey names a pool: the client's database and its tenant's cluster,
// with the cluster's definition, so that a changed host list or role is a
// new pool (the old one retires).
type routeKey struct {
	db, cluster, def string
}

// defaultRetireAfter is how long a cluster pool stays open with no
// clients before it is retired.
const defaultRetireAfter = 30 * time.Second

// routeOf is the route of a tenant's clients of database db under snap.
func routeOf(db string, snap *policy.Snapshot, t *policy.Tenant) (routeKey, *policy.PostgresCluster) {
	name, c := snap.PostgresCluster(t)
	if c == nil {
		return routeKey{db: db}, nil
	}
	def := strings.Join(c.Hosts, ",") + "|" + c.Database + "|" + c.User + "|" + c.Credentials
	return routeKey{db: db, cluster: name, def: def}, c
}

// errUnknownCredentials is what a cluster naming credentials this sidecar
// does not have gets.
var errUnknownCredentials = errors.New("unknown credentials")

// clusterConf builds the upstream configuration of a cluster's pool for
// database db: the configured URL's, with the cluster's hosts, database,
// role and password put in.
func (srv *Server) clusterConf(db string, name string, c *policy.PostgresCluster) (*pgconn.Config, error) {
	base := srv.pools[db]
	if base == nil {
		return nil, fmt.Errorf("database %q is not configured", db)
	}
	return clusterConfFrom(base.conf, srv.cfg.Credentials, name, c)
}

// clusterConfFrom is clusterConf from the configured URL's base.
func clusterConfFrom(base *pgconn.Config, creds map[string]Credential, name string, c *policy.PostgresCluster) (*pgconn.Config, error) {
	conf := base.Copy()
	if c.Database != "" {
		conf.Database = c.Database
	}
	if c.User != "" {
		conf.User = c.User
	}
	if c.Credentials != "" {
		cred, ok := creds[c.Credentials]
		if !ok {
			return nil, fmt.Errorf("cluster %q: %w %q (postgres.credentials in the sidecar's configuration)", name, errUnknownCredentials, c.Credentials)
		}
		if c.User == "" && cred.User != "" {
			conf.User = cred.User
		}
		conf.Password = cred.Password
	}
	if len(c.Hosts) > 0 {
		if err := setHosts(conf, c.Hosts); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
	}
	return conf, nil
}

// setHosts points conf at hosts, tried in order, keeping the ways the
// configured URL connects to its one host (sslmode=prefer tries TLS, then
// plaintext): each host gets each of them, as libpq's multi-host URLs do.
func setHosts(conf *pgconn.Config, hosts []string) error {
	type variant struct{ tls *tls.Config }
	variants := []variant{{conf.TLSConfig}}
	for _, fb := range conf.Fallbacks {
		variants = append(variants, variant{fb.TLSConfig})
	}
	var all []*pgconn.FallbackConfig
	for _, h := range hosts {
		host, portText, err := net.SplitHostPort(h)
		if err != nil {
			return fmt.Errorf("host %q: %w", h, err)
		}
		port, err := strconv.ParseUint(portText, 10, 16)
		if err != nil {
			return fmt.Errorf("host %q: bad port", h)
		}
		for _, v := range variants {
			t := v.tls
			if t != nil && t.ServerName != "" {
				t = t.Clone()
				t.ServerName = host
			}
			all = append(all, &pgconn.FallbackConfig{Host: host, Port: uint16(port), TLSConfig: t})
		}
	}
	conf.Host, conf.Port, conf.TLSConfig = all[0].Host, all[0].Port, all[0].TLSConfig
	conf.Fallbacks = all[1:]
	return nil
}

// routeFor returns the pool that serves key, counting one more client on
// it, and building it if it is the first. The configured upstream's pools
// always exist.
func (srv *Server) routeFor(key routeKey, c *policy.PostgresCluster) (*pool, error) {
	srv.pmu.Lock()
	defer srv.pmu.Unlock()
	if key.cluster == "" {
		p := srv.pools[key.db]
		if p == nil {
			return nil, fmt.Errorf("database %q is not configured", key.db)
		}
		p.adopt()
		return p, nil
	}
	if p := srv.routes[key]; p != nil {
		p.adopt()
		return p, nil
	}
	conf, err := srv.clusterConf(key.db, key.cluster, c)
	if err != nil {
		return nil, err
	}
	hosts := make([]string, 0, 1+len(conf.Fallbacks))
	hosts = append(hosts, net.JoinHostPort(conf.Host, strconv.Itoa(int(conf.Port))))
	for _, fb := range conf.Fallbacks {
		if h := net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port))); !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	name := fmt.Sprintf("%s/%s@%s/%s", key.cluster, conf.User, strings.Join(hosts, ","), conf.Database)
	p := newPool(name, conf, &srv.cfg, srv.log, srv.metrics, srv.slotsLocked(key.cluster))
	srv.routes[key] = p
	srv.log.Info("opened a pool for a cluster", "cluster", key.cluster, "pool", name)
	p.adopt()
	return p, nil
}

// slotsLocked returns the cluster's slot counter, creating it with the
// limit the policy and the control plane's share give. Called with
// srv.pmu held.
func (srv *Server) slotsLocked(cluster string) *clusterSlots {
	cs := srv.slots[cluster]
	if cs == nil {
		cs = newClusterSlots(cluster, srv.metrics)
		srv.slots[cluster] = cs
		cs.setLimit(srv.limitLocked(cluster, srv.policy.Load()))
	}
	return cs
}

// adopt counts one more client routed to p.
func (p *pool) adopt() {
	p.mu.Lock()
	p.clients++
	p.mu.Unlock()
}

// drop counts one client less routed to p.
func (p *pool) drop() {
	p.mu.Lock()
	if p.clients--; p.clients == 0 {
		p.unusedSince = time.Now()
	}
	p.mu.Unlock()
}

// followPlacement moves the client to its tenant's pool under the policy
// it follows, if that changed: called between transactions only (attach),
// so no transaction spans two clusters.
func (s *clientConn) followPlacement(ctx context.Context) error {
	key, c := routeOf(s.dbName, s.snap, s.t)
	if key == s.route {
		return nil
	}
	np, err := s.srv.routeFor(key, c)
	if err != nil {
		return err
	}
	old := s.pool
	if s.listening.Load() {
		// LISTEN follows the client: registrations move to the new
		// cluster's listening connection before anything else runs there.
		chans := old.notifier.channelsOf(s)
		old.notifier.unlisten(s, "")
		for _, ch := range chans {
			if err := np.notifier.listen(ctx, s, ch); err != nil {
				np.notifier.unlisten(s, "")
				s.setRoute(np, key)
				old.drop()
				return fmt.Errorf("%w: %w", errMoveListen, err)
			}
		}
	}
	s.setRoute(np, key)
	old.drop()
	s.srv.metrics.tenantsMoved.WithLabelValues("moved").Inc()
	s.srv.log.Info("client follows its tenant to another cluster", "tenant", s.tenant, "session", s.key.pid, "from", old.key, "to", np.key)
	return nil
}

// setRoute makes np the client's pool. s.route is read by Reconcile
// under s.mu; s.pool only by the client's goroutine, which alone writes both.
func (s *clientConn) setRoute(np *pool, key routeKey) {
	s.mu.Lock()
	s.pool, s.route = np, key
	s.mu.Unlock()
}

// routeChanged reports whether snap places the client's tenant elsewhere
// than the pool serving it; false for a tenant snap does not have.
func (s *clientConn) routeChanged(snap *policy.Snapshot) bool {
	t, ok := snap.Tenant(s.tenant)
	if !ok {
		return false
	}
	key, _ := routeOf(s.dbName, snap, t)
	s.mu.Lock()
	defer s.mu.Unlock()
	return key != s.route
}

// errMoveListen: the client's LISTEN registrations could not be moved.
var errMoveListen = errors.New("could not move LISTEN registrations to the tenant's new cluster")

// errTenantMoved is the FATAL a session-pooled client gets at the
// transaction boundary after its tenant moved to another cluster.
func errTenantMoved(tenant string) *wire.Error {
	return wire.Fatalf(wire.CodeAdminShutdown, "tenantguard: tenant %s was moved to another database cluster; reconnect to continue there (session state cannot move)", tenant)
}

// movedSession ends a session-pooled client whose tenant moved, at its
// next transaction boundary.
func (s *clientConn) movedSession() {
	if s.ending() {
		return
	}
	s.srv.metrics.tenantsMoved.WithLabelValues("ended").Inc()
	s.srv.log.Info("tenant moved; ending session-pooled client at its transaction boundary", "tenant", s.tenant, "session", s.key.pid)
	s.end(errTenantMoved(s.tenant), policy.SessionEndBoundary)
}

// channelsOf lists the client channels s listens to on n.
func (n *notifier) channelsOf(s *clientConn) []string {
	prefix := channelPrefix(s.tenant)
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for ns, ls := range n.subs {
		if _, ok := ls[s]; ok {
			out = append(out, strings.TrimPrefix(ns, prefix))
		}
	}
	return out
}

// retirePools closes cluster pools that have had no clients for
// RetireAfter: their idle connections first, then, once none is left, the
// pool itself. A pool of a cluster the policy no longer names is retired
// the same way as its clients leave (they move at their next
// transaction).
func (srv *Server) retirePools(now time.Time) {
	srv.pmu.Lock()
	var gone []*pool
	var shed []*pool
	for key, p := range srv.routes {
		p.mu.Lock()
		unused := p.clients == 0 && now.Sub(p.unusedSince) >= srv.cfg.PoolRetireAfter
		empty := p.total == 0
		p.mu.Unlock()
		switch {
		case unused && empty:
			delete(srv.routes, key)
			gone = append(gone, p)
		case unused:
			shed = append(shed, p)
		}
	}
	srv.pmu.Unlock()
	for _, p := range shed {
		p.closeIdle()
	}
	for _, p := range gone {
		srv.caches.closePool(p)
		p.close()
		p.wait()
		p.slots.remove(p)
		srv.metrics.poolsRetired.WithLabelValues(p.slots.label).Inc()
		srv.metrics.serverConns.DeleteLabelValues(p.key, "idle")
		srv.metrics.serverConns.DeleteLabelValues(p.key, "active")
		srv.metrics.waiting.DeleteLabelValues(p.key)
		srv.metrics.breakerState.DeleteLabelValues(p.key)
		srv.log.Info("retired an unused cluster pool", "pool", p.key)
	}
}

// closeIdle closes every idle connection of p.
func (p *pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	for _, sc := range idle {
		sc.inIdle = false
		p.idleGauge.Dec()
	}
	p.mu.Unlock()
	closeAll(idle)
}

// routedPools lists the cluster pools open now.
func (srv *Server) routedPools() []*pool {
	srv.pmu.Lock()
	defer srv.pmu.Unlock()
	out := make([]*pool, 0, len(srv.routes))
	for _, p := range srv.routes {
		out = append(out, p)
	}
	return out
}

// CheckPlacement reports whether this sidecar can serve snap's
// placement: every PostgreSQL cluster's credentials are configured here.
// A pushed policy that fails it is refused (NACKed), so that no tenant is
// moved to a cluster this sidecar cannot log in to.
func (srv *Server) CheckPlacement(snap *policy.Snapshot) error {
	for _, name := range snap.ClusterNames() {
		c, _ := snap.Cluster(name)
		if c.Postgres == nil || c.Postgres.Credentials == "" {
			continue
		}
		if _, ok := srv.cfg.Credentials[c.Postgres.Credentials]; !ok {
			return fmt.Errorf("clusters: cluster %q names credentials %q, which this sidecar's configuration (postgres.credentials) does not have", name, c.Postgres.Credentials)
		}
	}
	return nil
}

// upstream is one upstream a policy reaches: a pool's key and where it
// connects.
type upstream struct {
	key  string
	conf *pgconn.Config
}

// upstreamsOf lists every upstream snap reaches: the configured ones, and
// each PostgreSQL cluster for each configured database.
func (srv *Server) upstreamsOf(snap *policy.Snapshot) ([]upstream, error) {
	var out []upstream
	for _, p := range srv.uniq {
		out = append(out, upstream{p.key, p.conf})
	}
	seen := map[string]bool{}
	for _, name := range snap.ClusterNames() {
		c, _ := snap.Cluster(name)
		if c.Postgres == nil || len(c.Postgres.Hosts) == 0 && c.Postgres.Database == "" && c.Postgres.User == "" && c.Postgres.Credentials == "" {
			continue // the configured upstream under a name: checked above
		}
		for _, db := range srv.cfg.Databases {
			conf, err := srv.clusterConf(db.Name, name, c.Postgres)
			if err != nil {
				return nil, err
			}
			key := fmt.Sprintf("%s/%s@%s:%d/%s", name, conf.User, conf.Host, conf.Port, conf.Database)
			if !seen[key] {
				seen[key] = true
				out = append(out, upstream{key, conf})
			}
		}
	}
	return out, nil
}

// Upstream is one upstream database a policy reaches through a sidecar's
// configuration: for pg bootstrap and pg check.
type Upstream struct {
	// Cluster is the policy's cluster name; "" for the configured upstream.
	Cluster string
	// Database is the client-visible database name it serves.
	Database string
	// Config connects as the upstream role: host list, database, user,
	// password.
	Config *pgconn.Config
}

// Upstreams lists every upstream snap reaches with cfg: each configured
// database's URL, then, for each PostgreSQL cluster of snap that differs
// from it, the same database on that cluster. The same (hosts, database,
// role) is listed once.
func Upstreams(cfg Config, snap *policy.Snapshot) ([]Upstream, error) {
	var out []Upstream
	seen := map[string]bool{}
	add := func(u Upstream) {
		c := u.Config
		k := fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
		for _, fb := range c.Fallbacks {
			k += fmt.Sprintf(",%s:%d", fb.Host, fb.Port)
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, u)
		}
	}
	bases := make([]*pgconn.Config, len(cfg.Databases))
	for i, db := range cfg.Databases {
		conf, err := pgconn.ParseConfig(db.URL)
		if err != nil {
			return nil, fmt.Errorf("database %q: upstream url: %w", db.Name, err)
		}
		bases[i] = conf
		add(Upstream{Database: db.Name, Config: conf})
	}
	for _, name := range snap.ClusterNames() {
		c, _ := snap.Cluster(name)
		if c.Postgres == nil {
			continue
		}
		for i, db := range cfg.Databases {
			conf, err := clusterConfFrom(bases[i], cfg.Credentials, name, c.Postgres)
			if err != nil {
				return nil, err
			}
			add(Upstream{Cluster: name, Database: db.Name, Config: conf})
		}
	}
	return out, nil
}

// UpstreamKeys names every upstream snap reaches, for a caller deciding
// whether a new policy needs the isolation check again.
func (srv *Server) UpstreamKeys(snap *policy.Snapshot) []string {
	ups, err := srv.upstreamsOf(snap)
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	keys := make([]string, len(ups))
	for i, u := range ups {
		keys[i] = u.key
	}
	return keys
}
