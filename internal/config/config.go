// Package config reads the sidecar's YAML configuration file into typed
// settings. Every error names the file, the field and what is wrong.
package config

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// File is the sidecar configuration file as written.
type File struct {
	Listen struct {
		Postgres string `yaml:"postgres"`
		Redis    string `yaml:"redis"`
		Admin    string `yaml:"admin"`
	} `yaml:"listen"`
	Redis struct {
		Upstream           string   `yaml:"upstream"`
		Username           string   `yaml:"username"`
		Password           string   `yaml:"password"`
		SharedConnections  int      `yaml:"shared_connections"`
		MaxDedicated       int      `yaml:"max_dedicated_connections"`
		Namespace          string   `yaml:"namespace"`
		AllowScripting     bool     `yaml:"allow_scripting"`
		Emulate            []string `yaml:"emulate"`
		MaxClientConns     int      `yaml:"max_client_connections"`
		AuthTimeout        Duration `yaml:"auth_timeout"`
		ClientOutputLimit  int      `yaml:"client_output_limit"`
		ClientWriteTimeout Duration `yaml:"client_write_timeout"`
		MaxIdleDedicated   int      `yaml:"max_idle_dedicated_connections"`
		DedicatedIdleTime  Duration `yaml:"dedicated_idle_timeout"`
	} `yaml:"redis"`
	TLS struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
	} `yaml:"tls"`
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
			MaxPrepared    int      `yaml:"max_prepared_statements"`
		} `yaml:"pool"`
		Breaker struct {
			Failures uint32   `yaml:"failures"`
			OpenTime Duration `yaml:"open_timeout"`
		} `yaml:"breaker"`
		MaxClientConns  int      `yaml:"max_client_connections"`
		StartupTimeout  Duration `yaml:"startup_timeout"`
		MaxMessageBytes int      `yaml:"max_message_bytes"`
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
		} `yaml:"limits"`
		ShowConstraintDetail bool `yaml:"show_constraint_detail"`
	} `yaml:"tenants"`
	// Sessions, if present, lets clients authenticate with session tokens
	// issued by ext_authz.
	Sessions *SessionsFile `yaml:"sessions"`
	// ControlPlane, if present, makes the control plane the source of the
	// policy (tenants); the tenants listed here, if any, are only the
	// policy until the first push or the persisted one.
	ControlPlane *ControlPlaneClientFile `yaml:"controlplane"`
	DrainTimeout Duration                `yaml:"drain_timeout"`
}

// Duration is a time.Duration written as "5s", "250ms".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 5s, 250ms)", n.Line, s)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration must not be negative", n.Line)
	}
	*d = Duration(v)
	return nil
}

// Sidecar is the compiled configuration the sidecar runs with.
type Sidecar struct {
	PostgresListen string
	RedisListen    string // "" = no Redis listener
	AdminListen    string
	Postgres       proxypg.Config
	Redis          proxyredis.Config
	Policy         *policy.Snapshot
	Sessions       *Sessions           // nil: session tokens are not accepted
	ControlPlane   *ControlPlaneClient // nil: the policy is this file's
	DrainTimeout   time.Duration
}

// Error is a configuration error: which file, which field, what is wrong.
type Error struct {
	File  string
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Field, e.Msg)
}

// Load reads and validates the sidecar configuration at path.
func Load(path string) (*Sidecar, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return Parse(path, data)
}

// Parse validates configuration text; name is used in errors.
func Parse(name string, data []byte) (*Sidecar, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	fail := func(field, format string, args ...any) (*Sidecar, error) {
		return nil, &Error{File: name, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	out := &Sidecar{
		PostgresListen: f.Listen.Postgres,
		RedisListen:    f.Listen.Redis,
		AdminListen:    f.Listen.Admin,
		DrainTimeout:   time.Duration(f.DrainTimeout),
	}
	if out.DrainTimeout == 0 {
		out.DrainTimeout = 30 * time.Second
	}
	if out.PostgresListen == "" {
		return fail("listen.postgres", "required (e.g. 127.0.0.1:6432)")
	}
	for field, addr := range map[string]string{"listen.postgres": f.Listen.Postgres, "listen.admin": f.Listen.Admin, "listen.redis": f.Listen.Redis, "redis.upstream": f.Redis.Upstream} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fail(field, "%q is not host:port: %v", addr, err)
		}
	}
	pc := &out.Postgres
	if (f.TLS.CertFile == "") != (f.TLS.KeyFile == "") {
		return fail("tls", "cert_file and key_file must be given together")
	}
	if f.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.TLS.CertFile, f.TLS.KeyFile)
		if err != nil {
			return fail("tls.cert_file", "cannot load certificate and key: %v", err)
		}
		pc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if len(f.Postgres.Databases) == 0 {
		return fail("postgres.databases", "at least one database is required")
	}
	seen := map[string]bool{}
	for i, db := range f.Postgres.Databases {
		field := fmt.Sprintf("postgres.databases[%d]", i)
		if db.Name == "" {
			return fail(field+".name", "required")
		}
		if seen[db.Name] {
			return fail(field+".name", "database %q is listed twice", db.Name)
		}
		seen[db.Name] = true
		if !strings.HasPrefix(db.URL, "postgres://") && !strings.HasPrefix(db.URL, "postgresql://") {
			return fail(field+".url", "must be a postgres:// URL")
		}
		pc.Databases = append(pc.Databases, proxypg.Database{Name: db.Name, URL: db.URL})
	}
	p := f.Postgres.Pool
	switch p.Mode {
	case "", "transaction":
		pc.PoolMode = proxypg.PoolTransaction
	case "session":
		pc.PoolMode = proxypg.PoolSession
	default:
		return fail("postgres.pool.mode", "%q is not a pool mode (transaction or session)", p.Mode)
	}
	if p.Size < 0 || p.Size > 10000 {
		return fail("postgres.pool.size", "must be between 1 and 10000")
	}
	if p.MaxPrepared < 0 {
		return fail("postgres.pool.max_prepared_statements", "must not be negative")
	}
	pc.PoolSize = p.Size
	pc.PoolWaitTimeout = time.Duration(p.WaitTimeout)
	pc.ServerIdleTime = time.Duration(p.ServerIdleTime)
	pc.ServerLifetime = time.Duration(p.ServerLifetime)
	pc.ConnectTimeout = time.Duration(p.ConnectTimeout)
	pc.MaxPrepared = p.MaxPrepared
	pc.BreakerFailures = f.Postgres.Breaker.Failures
	pc.BreakerOpenTime = time.Duration(f.Postgres.Breaker.OpenTime)
	if f.Postgres.MaxClientConns < 0 {
		return fail("postgres.max_client_connections", "must not be negative")
	}
	pc.MaxClientConns = f.Postgres.MaxClientConns
	pc.StartupTimeout = time.Duration(f.Postgres.StartupTimeout)
	if f.Postgres.MaxMessageBytes < 0 || f.Postgres.MaxMessageBytes > 1<<30 {
		return fail("postgres.max_message_bytes", "must be between 1 and 1073741824")
	}
	pc.MaxMessageBytes = f.Postgres.MaxMessageBytes

	if err := parseRedis(&f, out); err != nil {
		return fail(err.field, "%s", err.msg)
	}

	spec := policy.Spec{Version: "file"}
	for _, t := range f.Tenants {
		ts := policy.TenantSpec{ID: t.ID, Passwords: t.Passwords, ShowConstraintDetail: t.ShowConstraintDetail,
			Limits: policy.Limits{
				MaxConnections:    t.Limits.MaxConnections,
				MaxTransactions:   t.Limits.MaxTransactions,
				StatementTimeout:  time.Duration(t.Limits.StatementTimeout),
				CommandsPerSecond: t.Limits.CommandsPerSecond,
			}}
		if t.Allow != nil {
			ts.Allow = &policy.Permissions{Read: t.Allow.Read, Write: t.Allow.Write, DDL: t.Allow.DDL}
		}
		spec.Tenants = append(spec.Tenants, ts)
	}
	for _, t := range f.Isolation.Tables {
		spec.Tables = append(spec.Tables, policy.TableSpec{Name: t.Name, TenantColumn: t.TenantColumn, Shared: t.Shared})
	}
	iso := f.Isolation
	enabled := len(iso.Tables) > 0
	if iso.Enabled != nil {
		enabled = *iso.Enabled
	}
	if enabled {
		key, err := decodeKey(iso.BindingKey)
		if err != nil {
			return fail("isolation.binding_key", "%v", err)
		}
		b, err := rls.NewBinder(key, time.Duration(iso.BindingMaxAge))
		if err != nil {
			return fail("isolation.binding_key", "%v", err)
		}
		pc.Binder = b
	}
	if f.ControlPlane != nil {
		cp, ferr := parseControlPlaneClient(f.ControlPlane, filepath.Dir(name), "sidecar")
		if ferr != nil {
			return fail(ferr.field, "%s", ferr.msg)
		}
		out.ControlPlane = cp
	} else if len(spec.Tenants) == 0 {
		return fail("tenants", "at least one tenant is required (or a controlplane section to take them from)")
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		var fe *policy.FieldError
		if errors.As(err, &fe) {
			return fail(fe.Field, "%s", fe.Msg)
		}
		return fail("tenants", "%v", err)
	}
	out.Policy = snap
	if f.Sessions != nil {
		s, ferr := parseSessions(f.Sessions, filepath.Dir(name), false)
		if ferr != nil {
			return fail(ferr.field, "%s", ferr.msg)
		}
		out.Sessions = s
	}
	return out, nil
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

type fieldErr struct{ field, msg string }

// parseRedis fills the Redis listener's settings.
func parseRedis(f *File, out *Sidecar) *fieldErr {
	r := f.Redis
	if out.RedisListen == "" {
		if r.Upstream != "" {
			return &fieldErr{"listen.redis", "required when redis.upstream is set"}
		}
		return nil
	}
	if r.Upstream == "" {
		return &fieldErr{"redis.upstream", "required when listen.redis is set (host:port of redis-server)"}
	}
	c := proxyredis.Config{
		Upstream: r.Upstream, UpstreamUser: r.Username, UpstreamPassword: r.Password,
		SharedConns: r.SharedConnections, MaxDedicated: r.MaxDedicated,
		AllowScripting: r.AllowScripting, MaxClientConns: r.MaxClientConns,
		AuthTimeout: time.Duration(r.AuthTimeout), Emulate: map[string]bool{},
		ClientOutputLimit: r.ClientOutputLimit, ClientWriteTimeout: time.Duration(r.ClientWriteTimeout),
		MaxIdleDedicated: r.MaxIdleDedicated, DedicatedIdleTimeout: time.Duration(r.DedicatedIdleTime),
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
	out.Redis = c
	return nil
}
