package policy

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Placement: which upstream cluster serves which tenant.
//
// A policy may name upstream clusters (ClusterSpec): PostgreSQL clusters
// (a host list, a database, a role and a reference to its password) and
// Redis upstreams (a standalone server or a Redis Cluster seed list). Each
// tenant is placed on at most one cluster of each kind; a tenant without a
// placement of a kind goes to that kind's default cluster, and without a
// default to the sidecar's configured upstream, the "local" cluster, named
// "" here. A policy with no clusters is exactly the policy before
// placement existed: every tenant on the configured upstreams.
//
// A PostgreSQL cluster without hosts is the sidecar's configured upstream
// under a name: a policy can budget it and make it the default without
// repeating addresses the sidecars already have.

// ClusterSpec is one upstream cluster as written in a policy.
type ClusterSpec struct {
	// Name identifies the cluster in placements, metrics and logs: the
	// tenant id rule (lower-case letters, digits, '-', '_').
	Name string
	// Default places tenants with no placement of a kind this cluster has
	// here; at most one cluster of each kind is the default.
	Default bool
	// Postgres, if set, makes this a PostgreSQL cluster.
	Postgres *PostgresCluster
	// Redis, if set, makes this a Redis upstream.
	Redis *RedisCluster
}

// PostgresCluster is where a PostgreSQL cluster's server connections go.
type PostgresCluster struct {
	// Hosts are "host:port" (or a bare host, port 5432), tried in order as
	// libpq tries a multi-host URL. Empty: the sidecar's configured
	// upstream (postgres.databases' URLs).
	Hosts []string
	// Database is the upstream database; empty keeps the database the
	// sidecar's configuration maps the client's database name to.
	Database string
	// User is the upstream role; empty keeps the configured URL's.
	User string
	// Credentials names the sidecar's local entry holding the role's
	// password (never the password: the policy reaches every sidecar and
	// the audit trail); empty keeps the configured URL's password.
	Credentials string
	// MaxServerConnections is the fleet's budget of server connections to
	// this cluster, split among connected sidecars by the control plane.
	// 0: no budget, each sidecar sizes its pools alone.
	MaxServerConnections int
	// MinPerSidecar is the least share of the budget a connected sidecar
	// gets (0: 1).
	MinPerSidecar int
}

// RedisCluster is where a Redis upstream's connections go: exactly one of
// Address (a standalone redis-server) and Seeds (a Redis Cluster).
type RedisCluster struct {
	Address     string
	Seeds       []string
	Credentials string
}

// IsCluster reports whether r is a Redis Cluster (a seed list).
func (r *RedisCluster) IsCluster() bool { return r != nil && len(r.Seeds) > 0 }

// Placement names the clusters of one tenant; "" takes the default.
type Placement struct {
	Postgres string
	Redis    string
}

// MaxClusters bounds the clusters of one policy, and MaxHosts the hosts
// of one cluster.
const (
	MaxClusters = 256
	MaxHosts    = 64
)

// DefaultMinPerSidecar is the least share of a cluster's budget each
// connected sidecar gets when the policy does not say.
const DefaultMinPerSidecar = 1

// compileClusters validates spec's clusters into s and returns the
// default cluster of each kind ("" for the local upstream).
func (s *Snapshot) compileClusters(spec []ClusterSpec) (defPG, defRedis string, err error) {
	if len(spec) > MaxClusters {
		return "", "", &FieldError{"clusters", fmt.Sprintf("at most %d clusters", MaxClusters)}
	}
	s.clusters = make(map[string]*ClusterSpec, len(spec))
	for i := range spec {
		c := spec[i]
		field := fmt.Sprintf("clusters[%d]", i)
		if !ValidTenantID(c.Name) {
			return "", "", &FieldError{field + ".name", fmt.Sprintf("%q is not a valid cluster name (lower-case letters, digits, '-', '_'; at most 63; starts with a letter or digit)", c.Name)}
		}
		if _, dup := s.clusters[c.Name]; dup {
			return "", "", &FieldError{field + ".name", fmt.Sprintf("cluster %q is defined twice", c.Name)}
		}
		if c.Postgres == nil && c.Redis == nil {
			return "", "", &FieldError{field, "a cluster needs a postgres or a redis section"}
		}
		if c.Postgres != nil {
			pg := *c.Postgres
			if err := checkPostgresCluster(&pg, field+".postgres"); err != nil {
				return "", "", err
			}
			c.Postgres = &pg
			if c.Default {
				if defPG != "" {
					return "", "", &FieldError{field + ".default", fmt.Sprintf("clusters %q and %q are both the default PostgreSQL cluster", defPG, c.Name)}
				}
				defPG = c.Name
			}
		}
		if c.Redis != nil {
			r := *c.Redis
			if err := checkRedisCluster(&r, field+".redis"); err != nil {
				return "", "", err
			}
			c.Redis = &r
			if c.Default {
				if defRedis != "" {
					return "", "", &FieldError{field + ".default", fmt.Sprintf("clusters %q and %q are both the default Redis upstream", defRedis, c.Name)}
				}
				defRedis = c.Name
			}
		}
		s.clusters[c.Name] = &c
		s.clusterNames = append(s.clusterNames, c.Name)
	}
	return defPG, defRedis, nil
}

func checkPostgresCluster(pg *PostgresCluster, field string) error {
	if len(pg.Hosts) > MaxHosts {
		return &FieldError{field + ".hosts", fmt.Sprintf("at most %d hosts", MaxHosts)}
	}
	pg.Hosts = append([]string(nil), pg.Hosts...)
	for j, h := range pg.Hosts {
		norm, err := hostPort(h, 5432)
		if err != nil {
			return &FieldError{fmt.Sprintf("%s.hosts[%d]", field, j), err.Error()}
		}
		pg.Hosts[j] = norm
	}
	if pg.Database != "" && !pgName(pg.Database) {
		return &FieldError{field + ".database", "not a database name (1 to 63 bytes, no NUL, no control characters)"}
	}
	if pg.User != "" && !pgName(pg.User) {
		return &FieldError{field + ".user", "not a role name (1 to 63 bytes, no NUL, no control characters)"}
	}
	if pg.Credentials != "" && !ValidTenantID(pg.Credentials) {
		return &FieldError{field + ".credentials", fmt.Sprintf("%q is not a credentials name (lower-case letters, digits, '-', '_')", pg.Credentials)}
	}
	if pg.MaxServerConnections < 0 || pg.MaxServerConnections > 1_000_000 {
		return &FieldError{field + ".max_server_connections", "must be between 0 (no budget) and 1000000"}
	}
	if pg.MinPerSidecar < 0 || pg.MinPerSidecar > 10_000 {
		return &FieldError{field + ".min_per_sidecar", "must be between 0 (the default, 1) and 10000"}
	}
	if pg.MinPerSidecar > 0 && pg.MaxServerConnections == 0 {
		return &FieldError{field + ".min_per_sidecar", "only with max_server_connections (a budget to share)"}
	}
	return nil
}

func checkRedisCluster(r *RedisCluster, field string) error {
	switch {
	case r.Address == "" && len(r.Seeds) == 0:
		return &FieldError{field, "give address (a standalone redis-server) or cluster_seeds (a Redis Cluster)"}
	case r.Address != "" && len(r.Seeds) > 0:
		return &FieldError{field, "address and cluster_seeds are exclusive: a standalone server or a Redis Cluster"}
	case len(r.Seeds) > MaxHosts:
		return &FieldError{field + ".cluster_seeds", fmt.Sprintf("at most %d seeds", MaxHosts)}
	}
	if r.Address != "" {
		norm, err := hostPort(r.Address, 0)
		if err != nil {
			return &FieldError{field + ".address", err.Error()}
		}
		r.Address = norm
	}
	r.Seeds = append([]string(nil), r.Seeds...)
	seen := map[string]bool{}
	for j, h := range r.Seeds {
		norm, err := hostPort(h, 0)
		if err != nil {
			return &FieldError{fmt.Sprintf("%s.cluster_seeds[%d]", field, j), err.Error()}
		}
		if seen[norm] {
			return &FieldError{fmt.Sprintf("%s.cluster_seeds[%d]", field, j), fmt.Sprintf("%s is listed twice", norm)}
		}
		seen[norm] = true
		r.Seeds[j] = norm
	}
	if r.Credentials != "" && !ValidTenantID(r.Credentials) {
		return &FieldError{field + ".credentials", fmt.Sprintf("%q is not a credentials name (lower-case letters, digits, '-', '_')", r.Credentials)}
	}
	return nil
}

// hostPort checks "host:port" (or, when defPort is not 0, a bare host)
// and returns it as net.JoinHostPort writes it.
func hostPort(s string, defPort int) (string, error) {
	if s == "" || len(s) > 300 {
		return "", fmt.Errorf("%q is not host:port", s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if defPort == 0 || strings.Contains(s, ":") && !strings.HasPrefix(s, "[") {
			return "", fmt.Errorf("%q is not host:port", s)
		}
		host, port = strings.Trim(s, "[]"), strconv.Itoa(defPort)
	}
	if !validHost(host) {
		return "", fmt.Errorf("%q: %q is not a host name or IP address", s, host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port must be 1 to 65535", s)
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// validHost accepts an IP address or a DNS name (letters, digits, '-',
// '.', '_'); nothing a connection string or a log line would misread.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return h[0] != '-' && h[0] != '.'
}

// pgName accepts what PostgreSQL takes as a database or role name without
// truncating it, and nothing with control characters.
func pgName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// resolvePlacement checks a tenant's placement against the clusters and
// fills in the defaults.
func (s *Snapshot) resolvePlacement(pl Placement, defPG, defRedis, field string) (Placement, error) {
	out := Placement{Postgres: defPG, Redis: defRedis}
	if pl.Postgres != "" {
		c, ok := s.clusters[pl.Postgres]
		if !ok {
			return out, &FieldError{field + ".placement.postgres", fmt.Sprintf("no cluster %q in clusters", pl.Postgres)}
		}
		if c.Postgres == nil {
			return out, &FieldError{field + ".placement.postgres", fmt.Sprintf("cluster %q has no postgres section", pl.Postgres)}
		}
		out.Postgres = pl.Postgres
	}
	if pl.Redis != "" {
		c, ok := s.clusters[pl.Redis]
		if !ok {
			return out, &FieldError{field + ".placement.redis", fmt.Sprintf("no cluster %q in clusters", pl.Redis)}
		}
		if c.Redis == nil {
			return out, &FieldError{field + ".placement.redis", fmt.Sprintf("cluster %q has no redis section", pl.Redis)}
		}
		out.Redis = pl.Redis
	}
	return out, nil
}

// Cluster looks up a cluster by name.
func (s *Snapshot) Cluster(name string) (*ClusterSpec, bool) {
	if s == nil {
		return nil, false
	}
	c, ok := s.clusters[name]
	return c, ok
}

// ClusterNames lists the clusters in policy order.
func (s *Snapshot) ClusterNames() []string {
	if s == nil {
		return nil
	}
	return s.clusterNames
}

// PostgresCluster is the PostgreSQL cluster t is placed on: its name and
// definition, or "" and nil for the sidecar's configured upstream.
func (s *Snapshot) PostgresCluster(t *Tenant) (string, *PostgresCluster) {
	if s == nil || t == nil || t.Placement.Postgres == "" {
		return "", nil
	}
	c := s.clusters[t.Placement.Postgres]
	if c == nil {
		return "", nil
	}
	return c.Name, c.Postgres
}

// RedisCluster is the Redis upstream t is placed on, as PostgresCluster.
func (s *Snapshot) RedisCluster(t *Tenant) (string, *RedisCluster) {
	if s == nil || t == nil || t.Placement.Redis == "" {
		return "", nil
	}
	c := s.clusters[t.Placement.Redis]
	if c == nil {
		return "", nil
	}
	return c.Name, c.Redis
}

// Budgets lists the PostgreSQL clusters with a connection budget.
func (s *Snapshot) Budgets() []*ClusterSpec {
	if s == nil {
		return nil
	}
	var out []*ClusterSpec
	for _, n := range s.clusterNames {
		if c := s.clusters[n]; c.Postgres != nil && c.Postgres.MaxServerConnections > 0 {
			out = append(out, c)
		}
	}
	return out
}
