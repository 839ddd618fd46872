//go:build !sidecar

package config

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// LifecycleFile is the control plane's lifecycle: section: what the
// tenant lifecycle operations (provision, export, import, offboard)
// reach, and how they run.
type LifecycleFile struct {
	// ArchiveDir holds exports (<operation id>.tar) and uploaded archives
	// for imports; default: none, and export and import are refused.
	ArchiveDir string `yaml:"archive_dir"`
	// MaxArchiveBytes bounds an uploaded archive (default 10 GiB).
	MaxArchiveBytes int64 `yaml:"max_archive_bytes"`
	// Lease is how long an operation stays with a control plane that
	// stopped renewing it before another takes it over (default 30s).
	Lease Duration `yaml:"lease"`
	// ReadyTimeout bounds the wait for the data planes to accept a policy
	// version an operation wrote (default 1m).
	ReadyTimeout Duration `yaml:"ready_timeout"`
	Postgres     struct {
		// URL is the tenants' database as the sidecars reach it: the same
		// upstream role, which cannot bypass row-level security (checked
		// before every step that touches rows).
		URL string `yaml:"url"`
		// BindingKey and BindingMaxAge are the sidecars' isolation
		// settings: the control plane binds its sessions to one tenant
		// with tenantguard.bind as they do.
		BindingKey    string   `yaml:"binding_key"`
		BindingMaxAge Duration `yaml:"binding_max_age"`
	} `yaml:"postgres"`
	Redis struct {
		// Upstream is the sidecars' redis.upstream (host:port), with its
		// username and password.
		Upstream string `yaml:"upstream"`
		Username string `yaml:"username"`
		Password string `yaml:"password"`
	} `yaml:"redis"`
	Move struct {
		// Clusters reach the policy's PostgreSQL clusters a tenant moves
		// between (tenantguard tenant move), by cluster name.
		Clusters map[string]struct {
			// AdminURL is the application database as a role that may
			// create publications and subscriptions (a superuser on
			// PostgreSQL 15).
			AdminURL string `yaml:"admin_url"`
			// PublisherConninfo is how another cluster's server reaches
			// this one as a move's source; default admin_url.
			PublisherConninfo string `yaml:"publisher_conninfo"`
		} `yaml:"clusters"`
	} `yaml:"move"`
	Sessions struct {
		// Store is the session store (ext_authz's sessions.store), whose
		// sessions an offboarding revokes.
		Store string `yaml:"store"`
	} `yaml:"sessions"`
}

// Lifecycle is the compiled lifecycle section.
type Lifecycle struct {
	ArchiveDir      string
	MaxArchiveBytes int64
	Lease           time.Duration
	ReadyTimeout    time.Duration
	PostgresURL     string // "" = rows are not reached
	BindingKey      []byte
	BindingMaxAge   time.Duration
	RedisAddr       string // "" = keys are not reached
	RedisUsername   string
	RedisPassword   string
	SessionStore    string // redis:// URL; "" = sessions are not revoked
	// MoveClusters are lifecycle.move.clusters: name → admin URL and
	// publisher connection string.
	MoveClusters map[string]MoveCluster
}

// MoveCluster is one entry of lifecycle.move.clusters.
type MoveCluster struct {
	AdminURL, PublisherConninfo string
}

// Defaults of the lifecycle section.
const (
	DefaultLifecycleLease  = 30 * time.Second
	DefaultReadyTimeout    = time.Minute
	DefaultMaxArchiveBytes = 10 << 30
	DefaultBindingMaxAgeCP = time.Hour
	minLifecycleLease      = 500 * time.Millisecond
)

// parseLifecycle compiles the lifecycle section; base resolves relative
// paths.
func parseLifecycle(f *LifecycleFile, base string) (Lifecycle, *fieldErr) {
	out := Lifecycle{
		MaxArchiveBytes: f.MaxArchiveBytes, Lease: time.Duration(f.Lease), ReadyTimeout: time.Duration(f.ReadyTimeout),
		PostgresURL: f.Postgres.URL, BindingMaxAge: time.Duration(f.Postgres.BindingMaxAge),
		RedisAddr: f.Redis.Upstream, RedisUsername: f.Redis.Username, RedisPassword: f.Redis.Password,
		SessionStore: f.Sessions.Store,
	}
	if f.ArchiveDir != "" {
		out.ArchiveDir = resolve(base, f.ArchiveDir)
	}
	switch {
	case out.MaxArchiveBytes < 0:
		return out, failf("lifecycle.max_archive_bytes", "must not be negative")
	case out.MaxArchiveBytes == 0:
		out.MaxArchiveBytes = DefaultMaxArchiveBytes
	}
	switch {
	case out.Lease == 0:
		out.Lease = DefaultLifecycleLease
	case out.Lease < minLifecycleLease:
		return out, failf("lifecycle.lease", "must be at least %s", minLifecycleLease)
	}
	if out.ReadyTimeout == 0 {
		out.ReadyTimeout = DefaultReadyTimeout
	}
	if out.PostgresURL != "" {
		if !strings.HasPrefix(out.PostgresURL, "postgres://") && !strings.HasPrefix(out.PostgresURL, "postgresql://") {
			return out, failf("lifecycle.postgres.url", "a postgres:// URL of the tenants' database, as the sidecars' upstream role")
		}
		key, err := decodeKey(f.Postgres.BindingKey)
		if err != nil {
			return out, failf("lifecycle.postgres.binding_key", "%v", err)
		}
		if len(key) < 16 || len(key) > 64 {
			return out, failf("lifecycle.postgres.binding_key", "must be 16 to 64 bytes (the sidecars' isolation.binding_key)")
		}
		out.BindingKey = key
		if out.BindingMaxAge == 0 {
			out.BindingMaxAge = DefaultBindingMaxAgeCP
		}
	} else if f.Postgres.BindingKey != "" {
		return out, failf("lifecycle.postgres.url", "required with binding_key")
	}
	if out.RedisAddr != "" {
		if _, _, err := net.SplitHostPort(out.RedisAddr); err != nil {
			return out, failf("lifecycle.redis.upstream", "%q is not host:port: %v", out.RedisAddr, err)
		}
	}
	for name, c := range f.Move.Clusters {
		field := "lifecycle.move.clusters." + name
		if !strings.HasPrefix(c.AdminURL, "postgres://") && !strings.HasPrefix(c.AdminURL, "postgresql://") {
			return out, failf(field+".admin_url", "a postgres:// URL of the cluster's application database")
		}
		if out.MoveClusters == nil {
			out.MoveClusters = map[string]MoveCluster{}
		}
		out.MoveClusters[name] = MoveCluster{AdminURL: c.AdminURL, PublisherConninfo: c.PublisherConninfo}
	}
	if out.SessionStore != "" && !strings.HasPrefix(out.SessionStore, "redis://") && !strings.HasPrefix(out.SessionStore, "rediss://") {
		return out, failf("lifecycle.sessions.store", "a redis:// URL (ext_authz's sessions.store)")
	}
	return out, nil
}

// String names what the lifecycle reaches, for the start-up log.
func (l Lifecycle) String() string {
	return fmt.Sprintf("rows=%t keys=%t sessions=%t archives=%q move_clusters=%d", l.PostgresURL != "", l.RedisAddr != "", l.SessionStore != "", l.ArchiveDir, len(l.MoveClusters))
}
