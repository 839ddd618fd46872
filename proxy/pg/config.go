package pg

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/internal/netserve"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// PoolMode says when a server connection returns to its pool.
type PoolMode string

// Pool modes, as in PgBouncer.
const (
	// PoolTransaction returns a server connection after every transaction.
	PoolTransaction PoolMode = "transaction"
	// PoolSession keeps one server connection for the client's whole session.
	PoolSession PoolMode = "session"
)

// Database maps a database name clients ask for onto an upstream.
type Database struct {
	// Name is what clients put in the startup packet's "database".
	Name string
	// URL is a libpq/pgx connection string for the upstream database, with its
	// user and password; each distinct (host, port, database, user) is one pool.
	URL string
}

// Credential is an upstream role's password that a policy cluster names
// (policy.PostgresCluster.Credentials): the policy carries the name, the
// sidecar's configuration the secret.
type Credential struct {
	// User, if set, is the role, unless the cluster names one itself.
	User     string
	Password string
}

// TokenAuth says on which connections the listener asks for the password
// itself (AuthenticationCleartextPassword) instead of running SCRAM. Session
// tokens need it: SCRAM never shows the server the secret, and a token is
// checked by the session service, not against a stored verifier.
type TokenAuth string

// TokenAuth values. Cleartext is asked for only when Config.Sessions is set.
const (
	// TokenAuthLocalOrTLS (the default, also as "") asks for a cleartext
	// password on TLS connections and on loopback or unix-socket ones, and
	// runs SCRAM, static credentials only, on any other plaintext connection.
	TokenAuthLocalOrTLS TokenAuth = "local-or-tls"
	// TokenAuthTLS asks for a cleartext password on TLS connections only.
	TokenAuthTLS TokenAuth = "tls"
	// TokenAuthOff always runs SCRAM: session tokens are never accepted.
	TokenAuthOff TokenAuth = "off"
)

// Config is everything the Postgres listener needs; it is built once from
// the sidecar's configuration file and never changed while serving.
type Config struct {
	// TLS, when set, answers SSLRequest with 'S' and upgrades the connection.
	TLS *tls.Config
	// Databases lists the databases clients may connect to.
	Databases []Database
	// Credentials are the passwords of the policy's clusters, by name.
	Credentials map[string]Credential
	// PoolRetireAfter is how long a cluster pool stays open with no
	// clients routed to it (0: 30s); then its connections close and it is
	// retired.
	PoolRetireAfter time.Duration

	// Pool settings, applied to every pool.
	PoolMode        PoolMode
	PoolSize        int           // server connections per pool
	PoolWaitTimeout time.Duration // how long a client waits for a server connection before 53300
	ServerIdleTime  time.Duration // idle server connections older than this are closed
	ServerLifetime  time.Duration // server connections older than this are closed when idle
	ConnectTimeout  time.Duration // upstream dial + startup
	// ResponseTimeout drops a server connection that sends nothing for
	// this long while a reply is owed (a stalled or partitioned upstream);
	// its client gets 08006 and is disconnected. 0 (the default) waits for
	// ever, as PgBouncer's query_timeout 0: set it above the longest
	// statement, which sends nothing until its first row.
	ResponseTimeout time.Duration
	MaxPrepared     int // protocol-level prepared statements cached per server connection

	// Breaker settings for each upstream.
	BreakerFailures uint32        // consecutive failures that open the breaker
	BreakerOpenTime time.Duration // how long it stays open before a trial

	// Binder, when set, turns isolation on: every upstream transaction runs
	// with the client's tenant bound, and every statement passes the firewall.
	Binder *rls.Binder

	// Sessions, when set, lets clients present session tokens as passwords
	// (see TokenAuth for where); nil accepts static credentials only.
	Sessions policy.SessionVerifier
	// SessionEnd says how a token-authenticated client is ended when its
	// session is revoked or expires; default policy.SessionEndBoundary.
	SessionEnd policy.SessionEndMode
	// SessionEndGrace bounds SessionEndBoundary: a transaction still open
	// this long after the client's session ended is ended at once (0: 30s).
	SessionEndGrace time.Duration
	// PauseDrainTimeout bounds how long a policy version pausing a tenant
	// (a move's switch) waits for the tenant's transactions in progress
	// before it ends them (pause.go); default DefaultPauseDrainTimeout.
	PauseDrainTimeout time.Duration
	// TokenAuth says on which connections tokens can be presented.
	TokenAuth TokenAuth

	// Console, when set, serves the admin console on database
	// ConsoleDatabase (see console.go).
	Console *Console

	// Client limits.
	MaxClientConns int // client connections open at once, logging in or not; 0 = unlimited
	// MaxClientConnsPerSource caps client connections open at once from
	// one IP address (gateway mode: many app pods share the listener);
	// 0 = unlimited.
	MaxClientConnsPerSource int
	// FailedHandshakesPerSecond paces accepts while connections fail
	// their startup faster than this (netserve.Acceptor): 0 is
	// netserve.DefaultFailedHandshakesPerSecond, negative is no pacing.
	FailedHandshakesPerSecond int
	ConnBudget                *netserve.Budget // a cap shared with the process's other listeners (file descriptors); nil = none
	StartupTimeout            time.Duration    // time to send a startup packet and authenticate
	// ClientWriteTimeout disconnects a client that takes longer than this
	// to take one batch of replies (up to a server read buffer, 32 KiB, or
	// one request's): one that does not read no longer holds its server
	// connection. Default 30s.
	ClientWriteTimeout time.Duration
	ParkIdleAfter      time.Duration // a client idle this long, holding no server connection, gives up its goroutine; < 0 = never
	MaxMessageBytes    int           // largest message a client may send once authenticated

	// ResultCacheBytes bounds each pool's result cache (resultcache.go),
	// which the policy's pg_cache section turns on; 0 means 64 MiB.
	ResultCacheBytes int64
	// CacheFillOnFirstMiss stores a cacheable result the first time it
	// misses; by default only a statement that missed before recently is
	// stored (resultCache.admitFill), so one-off statements cost no copy.
	CacheFillOnFirstMiss bool
}

// UpstreamConns is the most server connections the listener opens: a
// pool of PoolSize (default 20) per upstream.
func (c *Config) UpstreamConns() int {
	n := c.withDefaults()
	return n.PoolSize * len(n.Databases)
}

// validate rejects settings withDefaults cannot repair.
func (c *Config) validate() error {
	switch c.SessionEnd {
	case policy.SessionEndImmediate, policy.SessionEndBoundary:
	default:
		return fmt.Errorf("session end mode %q: want %q or %q", c.SessionEnd, policy.SessionEndImmediate, policy.SessionEndBoundary)
	}
	switch c.TokenAuth {
	case TokenAuthLocalOrTLS, TokenAuthTLS, TokenAuthOff:
	default:
		return fmt.Errorf("token auth %q: want %q, %q or %q", c.TokenAuth, TokenAuthLocalOrTLS, TokenAuthTLS, TokenAuthOff)
	}
	return nil
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.SessionEnd == "" {
		out.SessionEnd = policy.SessionEndBoundary
	}
	if out.TokenAuth == "" {
		out.TokenAuth = TokenAuthLocalOrTLS
	}
	if out.PoolMode == "" {
		out.PoolMode = PoolTransaction
	}
	if out.PoolSize <= 0 {
		out.PoolSize = 20
	}
	if out.PoolWaitTimeout <= 0 {
		out.PoolWaitTimeout = 5 * time.Second
	}
	if out.ServerIdleTime <= 0 {
		out.ServerIdleTime = 10 * time.Minute
	}
	if out.ServerLifetime <= 0 {
		out.ServerLifetime = time.Hour
	}
	if out.ConnectTimeout <= 0 {
		out.ConnectTimeout = 5 * time.Second
	}
	if out.PauseDrainTimeout <= 0 {
		out.PauseDrainTimeout = DefaultPauseDrainTimeout
	}
	if out.PoolRetireAfter <= 0 {
		out.PoolRetireAfter = defaultRetireAfter
	}
	if out.MaxPrepared <= 0 {
		out.MaxPrepared = 500
	}
	if out.BreakerFailures == 0 {
		out.BreakerFailures = 5
	}
	if out.BreakerOpenTime <= 0 {
		// One trial dial a second costs a down upstream nothing, and
		// service returns within about a second of the upstream's return.
		out.BreakerOpenTime = time.Second
	}
	if out.SessionEndGrace <= 0 {
		out.SessionEndGrace = 30 * time.Second
	}
	if out.ParkIdleAfter == 0 {
		out.ParkIdleAfter = 5 * time.Second
	}
	if out.ClientWriteTimeout <= 0 {
		out.ClientWriteTimeout = 30 * time.Second
	}
	if out.StartupTimeout <= 0 {
		out.StartupTimeout = 10 * time.Second
	}
	if out.MaxMessageBytes <= 0 {
		out.MaxMessageBytes = 64 << 20
	}
	return out
}
