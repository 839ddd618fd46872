// Package redis is tenantguard's Redis data plane: a listener that speaks
// RESP2/RESP3 to stock clients, binds each connection to a tenant at AUTH,
// rewrites every key, pattern and channel into the tenant's namespace of
// one shared Redis, and refuses what could cross tenants with -NOPERM.
//
// Stateless commands of many clients are multiplexed, pipelined, onto a few
// shared upstream connections; replies come back in order, one FIFO per
// connection. On Linux an event loop serves those clients and connections
// (loop_linux.go, fastpath.go). A client that needs connection state
// (MULTI/WATCH, blocking commands, pub/sub, RESP3) gets a dedicated
// upstream connection for as long as it is connected, reset with RESET and
// kept for the next such client when it leaves (pool.go).
//
// Words: a clientConn is one client connection (clientconn.go), an upConn
// one upstream connection (upstream.go); "session" means only a token
// session, whose lease a clientConn may hold (ending.go).
package redis

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/internal/netserve"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// DefaultClientOutputLimit is Config.ClientOutputLimit's default.
const DefaultClientOutputLimit = 4 << 20

// Config is what the Redis listener needs.
type Config struct {
	// Upstream is the redis-server address (host:port).
	Upstream string
	// Cluster, instead of Upstream, names seed nodes (host:port) of a
	// Redis Cluster: the listener learns the slot map from them and speaks
	// to every master (cluster.go).
	Cluster []string
	// UpstreamTLS, when set, makes every upstream connection (shared,
	// dedicated, scripts, near cache, every cluster node) a TLS one: it
	// returns the configuration for the next handshake, so renewed
	// certificates are used from the next connection on. An empty
	// ServerName is the host of the address dialled (upstream_tls.go).
	UpstreamTLS func() *tls.Config
	// UpstreamUser and UpstreamPassword authenticate to the upstream (ACL user).
	UpstreamUser, UpstreamPassword string
	// Credentials are the ACL users the policy's Redis upstreams name
	// (clusters[].redis.credentials), by name; an upstream naming none
	// uses UpstreamUser and UpstreamPassword (placement.go).
	Credentials map[string]Credential
	// RetireAfter closes a Redis upstream of the policy's placement that
	// no client has been routed to for this long (default 30s).
	RetireAfter time.Duration
	// SharedConns is the number of multiplexed upstream connections.
	SharedConns int
	// MaxDedicated caps dedicated upstream connections (stateful clients).
	MaxDedicated int
	// MaxIdleDedicated caps the dedicated connections kept, reset, for the
	// next stateful client (default 16; negative: none is kept).
	MaxIdleDedicated int
	// DedicatedIdleTimeout closes a kept dedicated connection unused this
	// long (default 60s).
	DedicatedIdleTimeout time.Duration
	// Namespace chooses how tenants map onto Redis Cluster slots.
	Namespace namespace.Mode
	// DisableScripting refuses EVAL, EVALSHA and SCRIPT (rule scripting).
	// Scripts are allowed by default: each runs as its tenant's own Redis
	// ACL user, confined to the tenant's keys and channels (scripts.go).
	DisableScripting bool
	// Emulate names commands answered per tenant: flushdb, flushall, dbsize.
	Emulate map[string]bool
	// MaxClientConns caps client connections open at once, authenticated
	// or not; 0 = unlimited.
	MaxClientConns int
	// FailedHandshakesPerSecond paces accepts while connections fail
	// before binding to a tenant faster than this (netserve.Acceptor): 0
	// is netserve.DefaultFailedHandshakesPerSecond, negative is no pacing.
	FailedHandshakesPerSecond int
	// ConnBudget is a cap shared with the process's other listeners (file
	// descriptors); nil = none.
	ConnBudget *netserve.Budget
	// TLS, when set, makes the listener a TLS one: a client that starts a
	// TLS handshake is served over TLS with this configuration; one that
	// does not is refused with a RESP error, unless AllowPlaintext.
	TLS *tls.Config
	// AllowPlaintext, with TLS, serves clients that do not start a TLS
	// handshake in plaintext on the same port (told apart by their first
	// byte), for a migration to TLS.
	AllowPlaintext bool
	// NearCache makes some keys of some tenants cacheable in the sidecar,
	// by tenant id (nearcache.go); nil: no near cache.
	NearCache map[string]NearCacheRule
	// AuthTimeout bounds the time to authenticate (a TLS handshake
	// included).
	AuthTimeout time.Duration
	// ClientWriteTimeout disconnects a client whose unwritten replies make
	// no progress for this long (default 5s). Replies never wait for a
	// client in front of another client's: see output.go.
	ClientWriteTimeout time.Duration
	// ClientOutputLimit disconnects a client when a reply arrives for it
	// while more than this many bytes of its replies are still waiting to
	// be written (default 4 MiB): redis-server's client-output-buffer-limit,
	// bounded for every client.
	ClientOutputLimit int
	// ConnectTimeout bounds an upstream dial and handshake.
	ConnectTimeout time.Duration
	// BreakerFailures and BreakerOpenTime configure the upstream breaker.
	BreakerFailures uint32
	BreakerOpenTime time.Duration
	// Sessions, when set, lets clients present session tokens as the AUTH
	// secret; nil accepts static credentials only.
	Sessions policy.SessionVerifier
	// SessionEnd says how a connection authenticated with a token is ended
	// when its session is revoked or expires; default policy.SessionEndBoundary.
	SessionEnd policy.SessionEndMode
	// SessionEndGrace bounds SessionEndBoundary: a client still inside
	// MULTI (or owed replies) this long after its session ended is closed
	// then. Default 30s.
	SessionEndGrace time.Duration
}

// Credential is an upstream ACL user and its password.
type Credential struct {
	User, Password string
}

func (c Config) withDefaults() Config {
	if c.RetireAfter <= 0 {
		c.RetireAfter = defaultRetireAfter
	}
	if c.SessionEnd == "" {
		c.SessionEnd = policy.SessionEndBoundary
	}
	if c.SessionEndGrace <= 0 {
		c.SessionEndGrace = 30 * time.Second
	}
	if c.SharedConns <= 0 {
		c.SharedConns = 4
	}
	if c.MaxDedicated <= 0 {
		c.MaxDedicated = 256
	}
	switch {
	case c.MaxIdleDedicated == 0:
		c.MaxIdleDedicated = 16
	case c.MaxIdleDedicated < 0:
		c.MaxIdleDedicated = 0
	}
	if c.DedicatedIdleTimeout <= 0 {
		c.DedicatedIdleTimeout = time.Minute
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.ClientWriteTimeout <= 0 {
		c.ClientWriteTimeout = 5 * time.Second
	}
	if c.ClientOutputLimit <= 0 {
		c.ClientOutputLimit = DefaultClientOutputLimit
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerOpenTime <= 0 {
		c.BreakerOpenTime = time.Second // as the Postgres listener's
	}
	return c
}

// UpstreamConns is the most upstream connections the listener opens.
func (c Config) UpstreamConns() int {
	n := c.withDefaults()
	return n.SharedConns + n.MaxDedicated
}

// validate rejects settings withDefaults cannot repair.
func (c Config) validate() error {
	switch c.SessionEnd {
	case policy.SessionEndImmediate, policy.SessionEndBoundary:
		return nil
	}
	return fmt.Errorf("session end mode %q: want %q or %q", c.SessionEnd, policy.SessionEndImmediate, policy.SessionEndBoundary)
}
