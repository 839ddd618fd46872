// Package xdsclient is the data planes' policy loader over xDS: it
// subscribes to the fleet's policy on the control plane's Aggregated
// Discovery Service (state of the world or delta), validates and applies
// every version it receives, ACKs what it applied and NACKs what it could
// not (keeping the last good policy in force), persists the last good
// policy to a cache file so that a restart while the control plane is down
// starts from it, and reconnects with backoff for as long as it runs.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Defaults of Options.Backoff.
const (
	DefaultBackoffInitial = 250 * time.Millisecond
	DefaultBackoffMax     = 10 * time.Second
)

// Backoff bounds the wait between attempts to reach the control plane: it
// starts at Initial, doubles after every failed attempt up to Max, and each
// wait is drawn at random from its upper half so that a fleet that lost
// the control plane together does not come back in step.
type Backoff struct {
	Initial time.Duration // 0 means DefaultBackoffInitial
	Max     time.Duration // 0 means DefaultBackoffMax
}

// Options configure a Client.
type Options struct {
	// ServerAddr is the control plane's xDS address, host:port (any gRPC
	// target).
	ServerAddr string
	// NodeID and Cluster identify this data plane to the control plane
	// (xDS node id and cluster).
	NodeID, Cluster string
	// Delta selects incremental (delta) xDS; otherwise state of the world.
	Delta bool
	// CacheFile, if set, is where the last good policy is kept (its
	// version and the policy as JSON, written atomically with mode 0600),
	// and where Run starts from.
	CacheFile string
	// Apply makes a policy the one in force: the data plane compiles it and
	// swaps it in. It gets only policies that passed policypb.Validate and
	// must not change them. An error (or a panic) rejects the version: it
	// is NACKed with the error's text and the previous policy stays in force.
	Apply func(version string, p *policypb.Policy) error
	// Backoff bounds the waits between connection attempts.
	Backoff Backoff
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the tenantguard_policy_* metrics; nil registers
	// none.
	Registerer prometheus.Registerer
	// ResourceName is the policy resource to subscribe to; "" means
	// policypb.DefaultName.
	ResourceName string
	// Token, if set, is sent as "authorization: Bearer <token>" on the
	// stream (the control plane's xds_token).
	Token string
	// Credentials, if set, secure the connection (TLS: the server's
	// certificate verified, and this node's client certificate presented
	// if it has one); nil dials in plaintext.
	Credentials credentials.TransportCredentials
	// DialOptions are added after the defaults (Credentials or plaintext,
	// keepalive pings every 30 s, reconnection backoff from Backoff,
	// messages up to 64 MiB).
	DialOptions []grpc.DialOption
}

// Client keeps a data plane's policy in step with the control plane. Its
// methods are safe for concurrent use.
type Client struct {
	opts    Options
	log     *slog.Logger
	m       *metrics
	ready   chan struct{}
	readyMu sync.Once
	running atomic.Bool
	cur     atomic.Pointer[applied]
}

// applied is a policy in force and its version.
type applied struct {
	version string
	policy  *policypb.Policy
}

// New returns a Client; Run starts it.
func New(opts Options) *Client {
	if opts.Backoff.Initial <= 0 {
		opts.Backoff.Initial = DefaultBackoffInitial
	}
	if opts.Backoff.Max <= 0 {
		opts.Backoff.Max = DefaultBackoffMax
	}
	opts.Backoff.Max = max(opts.Backoff.Max, opts.Backoff.Initial)
	if opts.ResourceName == "" {
		opts.ResourceName = policypb.DefaultName
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", opts.NodeID)
	return &Client{opts: opts, log: log, m: newMetrics(opts.Registerer, log), ready: make(chan struct{})}
}

// Ready is closed once a first policy is in force, from the cache file or
// from the control plane.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// HasPolicy reports whether Ready is closed: a policy is in force.
func (c *Client) HasPolicy() bool {
	select {
	case <-c.ready:
		return true
	default:
		return false
	}
}

// Version returns the version of the policy in force, "" before Ready.
func (c *Client) Version() string {
	if a := c.cur.Load(); a != nil {
		return a.version
	}
	return ""
}

// Policy returns the policy in force, nil before Ready. It must not be
// changed.
func (c *Client) Policy() *policypb.Policy {
	if a := c.cur.Load(); a != nil {
		return a.policy
	}
	return nil
}

// Run applies the cached policy (if CacheFile holds a valid one), then
// follows the control plane until ctx ends, reconnecting with backoff
// whenever the stream breaks; it never gives up. It returns nil when ctx
// ends, or at once an error for a configuration it cannot run with. Run
// may not be called again while it runs.
func (c *Client) Run(ctx context.Context) error {
	if c.opts.Apply == nil {
		return errors.New("xdsclient: Options.Apply is nil")
	}
	if c.opts.ServerAddr == "" {
		return errors.New("xdsclient: Options.ServerAddr is empty")
	}
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xdsclient: already running")
	}
	defer c.running.Store(false)

	if c.opts.CacheFile != "" {
		c.loadCache()
	}
	if c.opts.Token != "" && c.opts.Credentials == nil && !loopback(c.opts.ServerAddr) {
		c.log.Warn("xds: the token goes to the control plane in clear: give the controlplane section a tls section", "server", c.opts.ServerAddr)
	}
	conn, err := grpc.NewClient(c.opts.ServerAddr, c.dialOptions()...)
	if err != nil {
		return fmt.Errorf("xdsclient: %s: %w", c.opts.ServerAddr, err)
	}
	defer conn.Close()
	bo := newBackoff(c.opts.Backoff)
	failures := 0
	for {
		delivered, err := c.session(ctx, conn)
		c.m.connected.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if delivered {
			bo.reset()
			failures = 0
		}
		failures++
		wait := bo.next()
		// Say it once per outage, not at every attempt.
		level := slog.LevelDebug
		if failures == 1 {
			level = slog.LevelWarn
		}
		c.log.Log(ctx, level, "xds: lost the control plane; keeping the policy in force and retrying",
			"server", c.opts.ServerAddr, "error", err, "version", c.Version(), "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// loopback reports whether a host:port names the loopback interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return host == "localhost"
}

// session runs one ADS stream until it breaks; delivered reports whether
// the control plane sent anything on it.
func (c *Client) session(ctx context.Context, cc grpc.ClientConnInterface) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream
	if c.opts.Delta {
		return c.deltaSession(ctx, cc)
	}
	return c.sotwSession(ctx, cc)
}

// update validates and applies version p unless it is the policy in force
// already; persist says whether to write the cache file after.
func (c *Client) update(version string, p *policypb.Policy, persist bool) error {
	if cur := c.cur.Load(); cur != nil && cur.version == version && proto.Equal(cur.policy, p) {
		return nil // a reconnection resends what is in force
	}
	if version == "" {
		return errors.New("the policy has no version")
	}
	start := time.Now()
	if err := policypb.Validate(p); err != nil {
		return fmt.Errorf("policy %s is invalid: %w", version, err)
	}
	if err := c.apply(version, p); err != nil {
		return fmt.Errorf("policy %s was not applied: %w", version, err)
	}
	c.m.applySeconds.Observe(time.Since(start).Seconds())
	prev := c.Version()
	c.cur.Store(&applied{version: version, policy: p})
	c.m.setVersion(version)
	c.m.lastUpdate.SetToCurrentTime()
	c.readyMu.Do(func() { close(c.ready) })
	c.log.Info("xds: policy applied", "version", version, "previous", prev, "tenants", len(p.GetTenants()))
	if persist && c.opts.CacheFile != "" {
		if err := writeCache(c.opts.CacheFile, version, p); err != nil {
			// The policy is in force; only a restart without the control
			// plane would miss it.
			c.log.Error("xds: persist policy", "file", c.opts.CacheFile, "version", version, "error", err)
		}
	}
	return nil
}

// apply calls Options.Apply, turning a panic into an error: a policy that
// crashes the compiler is a rejected policy, not a dead data plane.
func (c *Client) apply(version string, p *policypb.Policy) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("apply panicked: %v", r)
		}
	}()
	return c.opts.Apply(version, p)
}

// rejected records a NACK.
func (c *Client) rejected(version string, err error) {
	c.m.nacks.Inc()
	c.log.Warn("xds: policy rejected; the previous one stays in force", "version", version, "in_force", c.Version(), "error", err)
}
