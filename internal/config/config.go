// Package config reads the sidecar's YAML configuration file into typed
// settings. Every error names the file, the field and what is wrong.
package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/internal/procs"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/wire/scram"
)

// File is the sidecar configuration file as written.
type File struct {
	Listen struct {
		Postgres string `yaml:"postgres"`
		Redis    string `yaml:"redis"`
		Admin    string `yaml:"admin"`
	} `yaml:"listen"`
	Redis struct {
		Upstream          string   `yaml:"upstream"`
		ClusterSeeds      []string `yaml:"cluster_seeds"` // instead of upstream: a Redis Cluster
		Username          string   `yaml:"username"`
		Password          string   `yaml:"password"`
		SharedConnections int      `yaml:"shared_connections"`
		MaxDedicated      int      `yaml:"max_dedicated_connections"`
		Namespace         string   `yaml:"namespace"`
		AllowScripting    *bool    `yaml:"allow_scripting"` // nil: true
		Emulate           []string `yaml:"emulate"`
		MaxClientConns    int      `yaml:"max_client_connections"`
		// FailedHandshakesPerSecond: see netserve.Acceptor; 0 = the
		// default, -1 = no accept pacing.
		FailedHandshakesPerSecond int      `yaml:"failed_handshakes_per_second"`
		AuthTimeout               Duration `yaml:"auth_timeout"`
		ClientOutputLimit         int      `yaml:"client_output_limit"`
		ClientWriteTimeout        Duration `yaml:"client_write_timeout"`
		MaxIdleDedicated          int      `yaml:"max_idle_dedicated_connections"`
		DedicatedIdleTime         Duration `yaml:"dedicated_idle_timeout"`
		// TLS, if present, makes the Redis listener a TLS one.
		TLS *RedisTLSFile `yaml:"tls"`
		// UpstreamTLS, if present (or with rediss:// addresses), makes
		// every connection to redis-server a TLS one.
		UpstreamTLS *RedisUpstreamTLSFile `yaml:"upstream_tls"`
		// NearCache lists the tenants whose keys the sidecar caches.
		NearCache []NearCacheFile `yaml:"near_cache"`
		// Credentials are the ACL users the policy's Redis upstreams name
		// (clusters[].redis.credentials); RetireAfter closes such an
		// upstream unused this long.
		Credentials []CredentialFile `yaml:"credentials"`
		RetireAfter Duration         `yaml:"retire_after"`
	} `yaml:"redis"`
	// TLS is the Postgres listener's: SSLRequest is answered with 'S' when
	// it is set. The Redis listener has its own, redis.tls.
	TLS      *ListenerTLSFile `yaml:"tls"`
	Postgres struct {
		Databases []struct {
			Name string `yaml:"name"`
			URL  string `yaml:"url"`
		} `yaml:"databases"`
		Pool struct {
			Mode           string   `yaml:"mode"`
			Size           int      `yaml:"size"`
			WaitTimeout    Duration `yaml:"wait_timeout"`
			ServerIdleTime Duration `yaml:"server_idle_timeout"`
			ServerLifetime Duration `yaml:"server_lifetime"`
			ConnectTimeout Duration `yaml:"connect_timeout"`
			// ResponseTimeout: see proxy/pg Config.ResponseTimeout.
			ResponseTimeout Duration `yaml:"response_timeout"`
			MaxPrepared     int      `yaml:"max_prepared_statements"`
		} `yaml:"pool"`
		Breaker struct {
			Failures uint32   `yaml:"failures"`
			OpenTime Duration `yaml:"open_timeout"`
		} `yaml:"breaker"`
		MaxClientConns int `yaml:"max_client_connections"`
		// MaxClientConnsPerSource: gateway mode (many app pods on one
		// listener); 0 = unlimited.
		MaxClientConnsPerSource int `yaml:"max_client_connections_per_source"`
		// FailedHandshakesPerSecond: see netserve.Acceptor; 0 = the
		// default, -1 = no accept pacing.
		FailedHandshakesPerSecond int      `yaml:"failed_handshakes_per_second"`
		StartupTimeout            Duration `yaml:"startup_timeout"`
		// ClientWriteTimeout: see proxy/pg Config.ClientWriteTimeout.
		ClientWriteTimeout Duration `yaml:"client_write_timeout"`
		ParkIdleAfter      Duration `yaml:"park_idle_clients_after"`
		// Console, when present, serves the admin console (database
		// "tenantguard") to this user.
		Console *struct {
			User     string `yaml:"user"`
			Password string `yaml:"password"` // plaintext, or a SCRAM-SHA-256 verifier
		} `yaml:"console"`
		MaxMessageBytes int `yaml:"max_message_bytes"`
		// CacheFillOnFirstMiss: see proxy/pg Config.CacheFillOnFirstMiss.
		CacheFillOnFirstMiss bool `yaml:"cache_fill_on_first_miss"`
		// Credentials are the passwords the policy's clusters name.
		Credentials []CredentialFile `yaml:"credentials"`
	} `yaml:"postgres"`
	Isolation struct {
		Enabled       *bool    `yaml:"enabled"`
		BindingKey    string   `yaml:"binding_key"`
		BindingMaxAge Duration `yaml:"binding_max_age"`
		Tables        []struct {
			Name         string `yaml:"name"`
			TenantColumn string `yaml:"tenant_column"`
			Shared       bool   `yaml:"shared"`
		} `yaml:"tables"`
	} `yaml:"isolation"`
	Tenants []struct {
		ID        string   `yaml:"id"`
		Passwords []string `yaml:"passwords"`
		Allow     *struct {
			Read  bool `yaml:"read"`
			Write bool `yaml:"write"`
			DDL   bool `yaml:"ddl"`
		} `yaml:"allow"`
		Limits struct {
			MaxConnections    int      `yaml:"max_connections"`
			MaxTransactions   int      `yaml:"max_transactions"`
			StatementTimeout  Duration `yaml:"statement_timeout"`
			CommandsPerSecond int      `yaml:"commands_per_second"`
			PgCacheBytes      int64    `yaml:"pg_cache_bytes"`
		} `yaml:"limits"`
		ShowConstraintDetail bool           `yaml:"show_constraint_detail"`
		Placement            *PlacementFile `yaml:"placement"`
	} `yaml:"tenants"`
	// PgCache, if present, is the PostgreSQL result cache (pgcache.go).
	PgCache *PgCacheFile `yaml:"pg_cache"`
	// Clusters are the upstream clusters the file's tenants are placed on
	// (with a control plane, the policy's).
	Clusters []ClusterFile `yaml:"clusters"`
	// Sessions, if present, lets clients authenticate with session tokens
	// issued by ext_authz.
	Sessions *SessionsFile `yaml:"sessions"`
	// ControlPlane, if present, makes the control plane the source of the
	// policy (tenants); the tenants listed here, if any, are only the
	// policy until the first push or the persisted one.
	ControlPlane *ControlPlaneClientFile `yaml:"controlplane"`
	DrainTimeout Duration                `yaml:"drain_timeout"`
	// Procs is how many threads may run Go code at once: a number, or
	// "auto" for Go's own choice; default 1 (internal/procs).
	Procs string `yaml:"procs"`
	Debug struct {
		// Pprof serves Go's profiles under /debug/pprof/ on the admin listener.
		Pprof bool `yaml:"pprof"`
	} `yaml:"debug"`
}

// Sidecar is the compiled configuration the sidecar runs with.
type Sidecar struct {
	PostgresListen string
	RedisListen    string // "" = no Redis listener
	AdminListen    string
	Postgres       proxypg.Config // its TLS is set from TLS when the sidecar starts
	Redis          proxyredis.Config
	// TLS is the Postgres listener's certificate and client CAs; nil: no
	// TLS (SSLRequest gets 'N').
	TLS *tlsconf.ServerFiles
	// RedisTLS is the Redis listener's; nil: plaintext. Redis.TLS is set
	// from it when the sidecar starts.
	RedisTLS     *tlsconf.ServerFiles
	Policy       *policy.Snapshot
	Sessions     *Sessions           // nil: session tokens are not accepted
	ControlPlane *ControlPlaneClient // nil: the policy is this file's
	DrainTimeout time.Duration
	// Procs: 0 = the default (internal/procs), procs.Auto = Go's own.
	Procs   int
	Pprof   bool   // serve /debug/pprof/ on the admin listener
	Path    string // the file it was read from ("" when parsed from text)
	Version string // the binary's version, for the admin console; set by the command

	// RedisUpstreamTLS is the Redis listener's TLS to redis-server; nil:
	// plaintext. Redis.UpstreamTLS is set from it when the sidecar starts.
	RedisUpstreamTLS *tlsconf.ClientFiles
}

// Load reads and validates the sidecar configuration at path.
func Load(path string) (*Sidecar, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	cfg, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	cfg.Path = path
	return cfg, nil
}

// Parse validates configuration text; name is used in errors and its
// directory resolves relative paths.
func Parse(name string, data []byte) (*Sidecar, error) {
	var f File
	if err := decodeStrict(name, data, &f); err != nil {
		return nil, err
	}
	out := &Sidecar{
		PostgresListen: f.Listen.Postgres,
		RedisListen:    f.Listen.Redis,
		AdminListen:    f.Listen.Admin,
		DrainTimeout:   time.Duration(f.DrainTimeout),
		Pprof:          f.Debug.Pprof,
	}
	if out.DrainTimeout == 0 {
		out.DrainTimeout = 30 * time.Second
	}
	var err error
	if out.Procs, err = procs.Parse(f.Procs); err != nil {
		return nil, failf("procs", "%v", err).in(name)
	}
	for _, step := range []func(*File, *Sidecar) *fieldErr{
		parseRedisSchemes, parseListen, parsePostgres, parsePool, parseRedis, parseIsolation,
	} {
		if fe := step(&f, out); fe != nil {
			return nil, fe.in(name)
		}
	}
	var fe *fieldErr
	if out.TLS, fe = parseListenerTLS(f.TLS, filepath.Dir(name), "tls"); fe != nil {
		return nil, fe.in(name)
	}
	if fe := parseRedisTLS(&f, out, filepath.Dir(name)); fe != nil {
		return nil, fe.in(name)
	}
	if fe := parseRedisUpstreamTLS(&f, out, filepath.Dir(name)); fe != nil {
		return nil, fe.in(name)
	}
	if fe := parsePolicy(&f, out, filepath.Dir(name)); fe != nil {
		return nil, fe.in(name)
	}
	return out, nil
}

// fieldErr is a configuration error in one field, before it is tied to a file.
type fieldErr struct{ field, msg string }

func failf(field, format string, args ...any) *fieldErr {
	return &fieldErr{field: field, msg: fmt.Sprintf(format, args...)}
}

func (e *fieldErr) in(file string) *Error { return &Error{File: file, Field: e.field, Msg: e.msg} }

// parseListen checks the listen addresses, after expanding ${NAME}
// environment references in the listeners' (a gateway listens on its pod
// IP: "${POD_IP}:6432" with POD_IP from the downward API).
func parseListen(f *File, out *Sidecar) *fieldErr {
	for _, l := range []struct {
		field string
		addr  *string
	}{
		{"listen.postgres", &f.Listen.Postgres}, {"listen.redis", &f.Listen.Redis}, {"listen.admin", &f.Listen.Admin},
	} {
		v, err := expandEnv(*l.addr)
		if err != nil {
			return failf(l.field, "%v", err)
		}
		*l.addr = v
	}
	out.PostgresListen, out.RedisListen, out.AdminListen = f.Listen.Postgres, f.Listen.Redis, f.Listen.Admin
	if out.PostgresListen == "" {
		return failf("listen.postgres", "required (e.g. 127.0.0.1:6432)")
	}
	for _, a := range []struct{ field, addr string }{
		{"listen.postgres", f.Listen.Postgres}, {"listen.admin", f.Listen.Admin},
		{"listen.redis", f.Listen.Redis}, {"redis.upstream", f.Redis.Upstream},
	} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return failf(a.field, "%q is not host:port: %v", a.addr, err)
		}
	}
	return nil
}

// parsePostgres fills the Postgres listener's databases and client limits.
func parsePostgres(f *File, out *Sidecar) *fieldErr {
	pc := &out.Postgres
	if len(f.Postgres.Databases) == 0 {
		return failf("postgres.databases", "at least one database is required")
	}
	seen := map[string]bool{}
	for i, db := range f.Postgres.Databases {
		field := fmt.Sprintf("postgres.databases[%d]", i)
		if db.Name == "" {
			return failf(field+".name", "required")
		}
		if seen[db.Name] {
			return failf(field+".name", "database %q is listed twice", db.Name)
		}
		seen[db.Name] = true
		if !strings.HasPrefix(db.URL, "postgres://") && !strings.HasPrefix(db.URL, "postgresql://") {
			return failf(field+".url", "must be a postgres:// URL")
		}
		pc.Databases = append(pc.Databases, proxypg.Database{Name: db.Name, URL: db.URL})
	}
	if f.Postgres.MaxClientConns < 0 {
		return failf("postgres.max_client_connections", "must not be negative")
	}
	if f.Postgres.MaxMessageBytes < 0 || f.Postgres.MaxMessageBytes > 1<<30 {
		return failf("postgres.max_message_bytes", "must be between 1 and 1073741824")
	}
	pc.MaxClientConns = f.Postgres.MaxClientConns
	if f.Postgres.MaxClientConnsPerSource < 0 {
		return failf("postgres.max_client_connections_per_source", "must not be negative")
	}
	pc.MaxClientConnsPerSource = f.Postgres.MaxClientConnsPerSource
	pc.FailedHandshakesPerSecond = f.Postgres.FailedHandshakesPerSecond
	pc.CacheFillOnFirstMiss = f.Postgres.CacheFillOnFirstMiss
	if c := f.Postgres.Console; c != nil {
		if c.User == "" || c.Password == "" {
			return failf("postgres.console", "user and password are both required")
		}
		if _, isTenant := tenantIDs(f)[c.User]; isTenant {
			return failf("postgres.console.user", "%q is a tenant; the console user must not be one", c.User)
		}
		v, err := scram.ParseVerifier(c.Password)
		if err != nil {
			if v, err = scram.NewVerifier(c.Password); err != nil {
				return failf("postgres.console.password", "%v", err)
			}
		}
		pc.Console = &proxypg.Console{User: c.User, Verifier: v}
	}
	pc.StartupTimeout = time.Duration(f.Postgres.StartupTimeout)
	pc.ClientWriteTimeout = time.Duration(f.Postgres.ClientWriteTimeout)
	pc.ParkIdleAfter = time.Duration(f.Postgres.ParkIdleAfter)
	pc.MaxMessageBytes = f.Postgres.MaxMessageBytes
	pc.BreakerFailures = f.Postgres.Breaker.Failures
	pc.BreakerOpenTime = time.Duration(f.Postgres.Breaker.OpenTime)
	return nil
}

// tenantIDs are the tenants the file names.
func tenantIDs(f *File) map[string]bool {
	out := map[string]bool{}
	for _, t := range f.Tenants {
		out[t.ID] = true
	}
	return out
}

// parsePool fills the Postgres pool settings.
func parsePool(f *File, out *Sidecar) *fieldErr {
	pc, p := &out.Postgres, f.Postgres.Pool
	switch p.Mode {
	case "", "transaction":
		pc.PoolMode = proxypg.PoolTransaction
	case "session":
		pc.PoolMode = proxypg.PoolSession
	default:
		return failf("postgres.pool.mode", "%q is not a pool mode (transaction or session)", p.Mode)
	}
	if p.Size < 0 || p.Size > 10000 {
		return failf("postgres.pool.size", "must be between 1 and 10000")
	}
	if p.MaxPrepared < 0 {
		return failf("postgres.pool.max_prepared_statements", "must not be negative")
	}
	pc.PoolSize = p.Size
	pc.PoolWaitTimeout = time.Duration(p.WaitTimeout)
	pc.ServerIdleTime = time.Duration(p.ServerIdleTime)
	pc.ServerLifetime = time.Duration(p.ServerLifetime)
	pc.ConnectTimeout = time.Duration(p.ConnectTimeout)
	pc.ResponseTimeout = time.Duration(p.ResponseTimeout)
	pc.MaxPrepared = p.MaxPrepared
	return nil
}

// parseIsolation turns row isolation on when tables are listed (or it is
// enabled explicitly), with the binding key.
func parseIsolation(f *File, out *Sidecar) *fieldErr {
	iso := f.Isolation
	enabled := len(iso.Tables) > 0
	if iso.Enabled != nil {
		enabled = *iso.Enabled
	}
	if !enabled {
		return nil
	}
	key, err := decodeKey(iso.BindingKey)
	if err != nil {
		return failf("isolation.binding_key", "%v", err)
	}
	b, err := rls.NewBinder(key, time.Duration(iso.BindingMaxAge))
	if err != nil {
		return failf("isolation.binding_key", "%v", err)
	}
	out.Postgres.Binder = b
	return nil
}

// parsePolicy compiles the file's tenants and tables into the policy the
// sidecar starts with, and reads where later policies come from (a control
// plane) and the session-token settings; dir resolves relative paths.
func parsePolicy(f *File, out *Sidecar, dir string) *fieldErr {
	spec := policy.Spec{Version: "file"}
	for _, t := range f.Tenants {
		ts := policy.TenantSpec{ID: t.ID, Passwords: t.Passwords, ShowConstraintDetail: t.ShowConstraintDetail, Placement: t.Placement.spec(),
			Limits: policy.Limits{
				MaxConnections:    t.Limits.MaxConnections,
				MaxTransactions:   t.Limits.MaxTransactions,
				StatementTimeout:  time.Duration(t.Limits.StatementTimeout),
				CommandsPerSecond: t.Limits.CommandsPerSecond,
				PgCacheBytes:      t.Limits.PgCacheBytes,
			}}
		if t.Allow != nil {
			ts.Allow = &policy.Permissions{Read: t.Allow.Read, Write: t.Allow.Write, DDL: t.Allow.DDL}
		}
		spec.Tenants = append(spec.Tenants, ts)
	}
	for _, t := range f.Isolation.Tables {
		spec.Tables = append(spec.Tables, policy.TableSpec{Name: t.Name, TenantColumn: t.TenantColumn, Shared: t.Shared})
	}
	spec.PgCache = f.PgCache.pgCacheSpec()
	spec.Clusters = clusterSpecs(f.Clusters)
	if fe := parseCredentials(f, out, dir); fe != nil {
		return fe
	}
	if f.ControlPlane != nil {
		cp, fe := parseControlPlaneClient(f.ControlPlane, dir, "sidecar")
		if fe != nil {
			return fe
		}
		out.ControlPlane = cp
	} else if len(spec.Tenants) == 0 {
		return failf("tenants", "at least one tenant is required (or a controlplane section to take them from)")
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		var pe *policy.FieldError
		if errors.As(err, &pe) {
			return failf(pe.Field, "%s", pe.Msg)
		}
		return failf("tenants", "%v", err)
	}
	out.Policy = snap
	if f.Sessions != nil {
		s, fe := parseSessions(f.Sessions, dir, false)
		if fe != nil {
			return fe
		}
		out.Sessions = s
	}
	return nil
}

// decodeKey accepts the binding key as hex (32 to 128 digits) or as text of
// 16 to 64 bytes.
func decodeKey(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("required when isolation is enabled (16 to 64 bytes, or hex)")
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) >= 16 {
		return b, nil
	}
	return []byte(s), nil
}

// parseRedis fills the Redis listener's settings.
func parseRedis(f *File, out *Sidecar) *fieldErr {
	r := f.Redis
	if out.RedisListen == "" {
		if r.Upstream != "" || len(r.ClusterSeeds) > 0 {
			return &fieldErr{"listen.redis", "required when redis.upstream or redis.cluster_seeds is set"}
		}
		return nil
	}
	switch {
	case r.Upstream == "" && len(r.ClusterSeeds) == 0:
		return &fieldErr{"redis.upstream", "required when listen.redis is set (host:port of redis-server; or redis.cluster_seeds for a Redis Cluster)"}
	case r.Upstream != "" && len(r.ClusterSeeds) > 0:
		return &fieldErr{"redis.cluster_seeds", "set either redis.upstream (one redis-server) or redis.cluster_seeds (a Redis Cluster), not both"}
	}
	for i, s := range r.ClusterSeeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return &fieldErr{fmt.Sprintf("redis.cluster_seeds[%d]", i), fmt.Sprintf("%q is not host:port: %v", s, err)}
		}
	}
	c := proxyredis.Config{
		Upstream: r.Upstream, Cluster: slices.Clone(r.ClusterSeeds), UpstreamUser: r.Username, UpstreamPassword: r.Password,
		SharedConns: r.SharedConnections, MaxDedicated: r.MaxDedicated,
		DisableScripting: r.AllowScripting != nil && !*r.AllowScripting, MaxClientConns: r.MaxClientConns,
		FailedHandshakesPerSecond: r.FailedHandshakesPerSecond,
		AuthTimeout:               time.Duration(r.AuthTimeout), Emulate: map[string]bool{},
		ClientOutputLimit: r.ClientOutputLimit, ClientWriteTimeout: time.Duration(r.ClientWriteTimeout),
		MaxIdleDedicated: r.MaxIdleDedicated, DedicatedIdleTimeout: time.Duration(r.DedicatedIdleTime),
		RetireAfter: time.Duration(r.RetireAfter),
	}
	if r.ClientOutputLimit < 0 {
		return &fieldErr{"redis.client_output_limit", "must not be negative (bytes; 0 = the default)"}
	}
	switch r.Namespace {
	case "", "spread":
		c.Namespace = namespace.Spread
	case "one-slot":
		c.Namespace = namespace.OneSlot
	default:
		return &fieldErr{"redis.namespace", fmt.Sprintf("%q is not a namespace mode (spread or one-slot)", r.Namespace)}
	}
	if r.SharedConnections < 0 || r.SharedConnections > 1024 {
		return &fieldErr{"redis.shared_connections", "must be between 1 and 1024"}
	}
	for i, e := range r.Emulate {
		switch e {
		case "flushdb", "flushall", "dbsize":
			c.Emulate[e] = true
		default:
			return &fieldErr{fmt.Sprintf("redis.emulate[%d]", i), fmt.Sprintf("%q cannot be emulated (flushdb, flushall, dbsize)", e)}
		}
	}
	if len(r.NearCache) > 0 && len(r.ClusterSeeds) > 0 {
		return &fieldErr{"redis.near_cache", "not available with redis.cluster_seeds: its invalidations come from one redis-server's tracking"}
	}
	for i, n := range r.NearCache {
		field := fmt.Sprintf("redis.near_cache[%d]", i)
		if err := policy.CheckTenantID(n.Tenant); err != nil {
			return &fieldErr{field + ".tenant", err.Error()}
		}
		if c.NearCache == nil {
			c.NearCache = map[string]proxyredis.NearCacheRule{}
		}
		if _, dup := c.NearCache[n.Tenant]; dup {
			return &fieldErr{field + ".tenant", fmt.Sprintf("tenant %q is listed twice", n.Tenant)}
		}
		if len(n.Keys) == 0 {
			return &fieldErr{field + ".keys", "at least one key pattern is required (e.g. \"user:*\")"}
		}
		for j, k := range n.Keys {
			if k == "" {
				return &fieldErr{fmt.Sprintf("%s.keys[%d]", field, j), "must not be empty"}
			}
		}
		if n.MaxTTL <= 0 {
			return &fieldErr{field + ".max_ttl", "required: how long an entry is served at most (e.g. 60s)"}
		}
		if n.MaxBytes < 0 {
			return &fieldErr{field + ".max_bytes", "must not be negative (0: 16 MiB)"}
		}
		c.NearCache[n.Tenant] = proxyredis.NearCacheRule{Patterns: n.Keys, MaxTTL: time.Duration(n.MaxTTL), MaxBytes: n.MaxBytes}
	}
	out.Redis = c
	return nil
}

// NearCacheFile is one tenant's entry of redis.near_cache.
type NearCacheFile struct {
	Tenant string `yaml:"tenant"`
	// Keys are glob patterns (as KEYS takes them) on the tenant's own key
	// names.
	Keys     []string `yaml:"keys"`
	MaxTTL   Duration `yaml:"max_ttl"`
	MaxBytes int64    `yaml:"max_bytes"`
}
