package pg

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"time"
)

// The console's SHOW commands: a consistent-enough snapshot of the
// listener's state, taken without holding more than one lock at a time.

// clientRow is what SHOW CLIENTS and SHOW POOLS need of a client.
type clientRow struct {
	tenant, db, state, app string
	remote, local          net.Addr
	connected, request     time.Time
	waitSince              time.Time
	tls                    bool
}

// clientRows snapshots the registered sessions.
func (srv *Server) clientRows() []clientRow {
	var out []clientRow
	for _, s := range srv.remaining() {
		r := clientRow{tenant: s.tenant, db: s.dbName, remote: s.conn.RemoteAddr(), local: s.conn.LocalAddr(),
			connected: s.connectedAt, tls: s.tls}
		if ns := s.lastRequest.Load(); ns > 0 {
			r.request = time.Unix(0, ns)
		}
		switch {
		case s.parked.Load():
			r.state = "parked"
		case s.sc.Load() != nil:
			r.state = "active"
		case s.waitingSince.Load() > 0:
			r.state = "waiting"
			r.waitSince = time.Unix(0, s.waitingSince.Load())
		default:
			r.state = "idle"
		}
		s.pmu.Lock()
		if i := trackedIndex("application_name"); i >= 0 {
			r.app, _ = s.params.get(i)
		}
		s.pmu.Unlock()
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].connected.Before(out[j].connected) })
	return out
}

func hostPort(a net.Addr) (string, string) {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String(), strconv.Itoa(t.Port)
	}
	return a.String(), ""
}

// showClients is SHOW CLIENTS: one row per client connection.
func (srv *Server) showClients() *resultSet {
	res := &resultSet{cols: []string{"type", "user", "database", "state", "addr", "port", "local_addr", "local_port",
		"connect_time", "request_time", "wait", "wait_us", "tls", "application_name"}}
	now := time.Now()
	for _, r := range srv.clientRows() {
		addr, port := hostPort(r.remote)
		laddr, lport := hostPort(r.local)
		wait, waitUs := "0", "0"
		if !r.waitSince.IsZero() {
			d := now.Sub(r.waitSince)
			wait, waitUs = i64(int64(d/time.Second)), i64(int64(d%time.Second/time.Microsecond))
		}
		tls := ""
		if r.tls {
			tls = "TLS"
		}
		res.rows = append(res.rows, []string{"C", r.tenant, r.db, r.state, addr, port, laddr, lport,
			ftime(r.connected), ftime(r.request), wait, waitUs, tls, r.app})
	}
	return res
}

// showPools is SHOW POOLS: one row per (database, tenant) with clients,
// as PgBouncer's one row per (database, user).
func (srv *Server) showPools() *resultSet {
	res := &resultSet{cols: []string{"database", "user", "cl_active", "cl_waiting", "cl_idle", "cl_parked",
		"sv_active", "sv_idle", "sv_used", "sv_login", "maxwait", "maxwait_us", "pool_mode"}}
	type key struct{ db, tenant string }
	type counts struct {
		active, waiting, idle, parked int
		maxwait                       time.Duration
	}
	byKey := map[key]*counts{}
	now := time.Now()
	for _, r := range srv.clientRows() {
		k := key{r.db, r.tenant}
		c := byKey[k]
		if c == nil {
			c = &counts{}
			byKey[k] = c
		}
		switch r.state {
		case "active":
			c.active++
		case "waiting":
			c.waiting++
			c.maxwait = max(c.maxwait, now.Sub(r.waitSince))
		case "parked":
			c.parked++
		default:
			c.idle++
		}
	}
	keys := make([]key, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].db < keys[j].db || keys[i].db == keys[j].db && keys[i].tenant < keys[j].tenant
	})
	for _, k := range keys {
		c := byKey[k]
		p := srv.pools[k.db]
		st := p.stats()
		res.rows = append(res.rows, []string{k.db, k.tenant, itoa(c.active), itoa(c.waiting), itoa(c.idle), itoa(c.parked),
			itoa(st.leased[k.tenant]), itoa(st.idle), "0", itoa(st.dialing),
			i64(int64(c.maxwait / time.Second)), i64(int64(c.maxwait % time.Second / time.Microsecond)), string(srv.cfg.PoolMode)})
	}
	return res
}

// showServers is SHOW SERVERS: one row per upstream connection.
func (srv *Server) showServers() *resultSet {
	res := &resultSet{cols: []string{"type", "user", "database", "state", "addr", "port", "local_addr", "local_port",
		"connect_time", "remote_pid", "tenant"}}
	for _, db := range srv.databaseNames() {
		p := srv.pools[db]
		for _, sc := range p.conns() {
			sc.mu.Lock()
			state := sc.state.String()
			sc.mu.Unlock()
			p.mu.Lock()
			tenant := ""
			if sc.leased {
				tenant = sc.lease
			}
			p.mu.Unlock()
			addr, port := hostPort(sc.conn.RemoteAddr())
			laddr, lport := hostPort(sc.conn.LocalAddr())
			res.rows = append(res.rows, []string{"S", p.conf.User, db, state, addr, port, laddr, lport,
				ftime(sc.created), strconv.FormatUint(uint64(sc.pid), 10), tenant})
		}
	}
	return res
}

// showStats is SHOW STATS: totals per database since start, in PgBouncer's
// columns (times in microseconds).
func (srv *Server) showStats() *resultSet {
	res := &resultSet{cols: []string{"database", "total_xact_count", "total_query_count", "total_xact_time",
		"total_query_time", "total_wait_time", "avg_xact_time", "avg_query_time"}}
	for _, db := range srv.databaseNames() {
		st := srv.pools[db].stats()
		avg := func(total, n int64) string {
			if n == 0 {
				return "0"
			}
			return i64(total / n)
		}
		res.rows = append(res.rows, []string{db, i64(st.xacts), i64(st.queries), i64(st.xactUs), i64(st.queryUs),
			i64(st.waitUs), avg(st.xactUs, st.xacts), avg(st.queryUs, st.queries)})
	}
	return res
}

// showTenants is SHOW TENANTS: the policy's tenants, their limits and use.
func (srv *Server) showTenants() *resultSet {
	res := &resultSet{cols: []string{"tenant", "clients", "parked", "sv_active", "max_connections", "max_transactions",
		"statement_timeout", "read", "write", "ddl", "paused"}}
	snap := srv.policy.Load()
	clients, parked := map[string]int{}, map[string]int{}
	for _, r := range srv.clientRows() {
		clients[r.tenant]++
		if r.state == "parked" {
			parked[r.tenant]++
		}
	}
	active := map[string]int{}
	for _, db := range srv.databaseNames() {
		for t, n := range srv.pools[db].stats().leased {
			active[t] += n
		}
	}
	b := func(v bool) string {
		if v {
			return "on"
		}
		return "off"
	}
	for _, id := range snap.TenantIDs() {
		t, _ := snap.Tenant(id)
		res.rows = append(res.rows, []string{id, itoa(clients[id]), itoa(parked[id]), itoa(active[id]),
			itoa(t.Limits.MaxConnections), itoa(t.Limits.MaxTransactions), t.Limits.StatementTimeout.String(),
			b(t.Allow.Read), b(t.Allow.Write), b(t.Allow.DDL), b(srv.paused(id))})
	}
	return res
}

// showConfig is SHOW CONFIG: the listener's settings, PgBouncer's columns.
func (srv *Server) showConfig() *resultSet {
	c := srv.cfg
	def := (&Config{}).withDefaults()
	rows := [][3]string{
		{"pool_mode", string(c.PoolMode), string(def.PoolMode)},
		{"default_pool_size", itoa(c.PoolSize), itoa(def.PoolSize)},
		{"pool_wait_timeout", c.PoolWaitTimeout.String(), def.PoolWaitTimeout.String()},
		{"server_idle_timeout", c.ServerIdleTime.String(), def.ServerIdleTime.String()},
		{"server_lifetime", c.ServerLifetime.String(), def.ServerLifetime.String()},
		{"server_connect_timeout", c.ConnectTimeout.String(), def.ConnectTimeout.String()},
		{"max_prepared_statements", itoa(c.MaxPrepared), itoa(def.MaxPrepared)},
		{"max_client_conn", itoa(c.MaxClientConns), "0"},
		{"client_login_timeout", c.StartupTimeout.String(), def.StartupTimeout.String()},
		{"park_idle_clients_after", c.ParkIdleAfter.String(), def.ParkIdleAfter.String()},
		{"max_message_bytes", itoa(c.MaxMessageBytes), itoa(def.MaxMessageBytes)},
		{"breaker_failures", strconv.FormatUint(uint64(c.BreakerFailures), 10), strconv.FormatUint(uint64(def.BreakerFailures), 10)},
		{"breaker_open_timeout", c.BreakerOpenTime.String(), def.BreakerOpenTime.String()},
		{"isolation", fmt.Sprint(c.Binder != nil), "false"},
		{"tls", fmt.Sprint(c.TLS != nil), "false"},
	}
	res := &resultSet{cols: []string{"key", "value", "default", "changeable"}}
	for _, r := range rows {
		res.rows = append(res.rows, []string{r[0], r[1], r[2], "no"})
	}
	return res
}

// databaseNames lists the client-visible database names, sorted.
func (srv *Server) databaseNames() []string {
	names := make([]string, 0, len(srv.pools))
	for n := range srv.pools {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
