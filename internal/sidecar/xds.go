package sidecar

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// newPolicyClient returns the xDS client that keeps the sidecar's policy
// current, or nil when the policy is the configuration file's.
func (sc *Sidecar) newPolicyClient(reg prometheus.Registerer) (*xdsclient.Client, error) {
	cp := sc.cfg.ControlPlane
	if cp == nil {
		return nil, nil
	}
	creds, err := tlsconf.GRPCClient(cp.TLS, tlsconf.Options{Name: "controlplane-client", Logger: sc.log.With("component", "tls")}, reg)
	if err != nil {
		return nil, fmt.Errorf("controlplane.tls: %w", err)
	}
	sc.cpCreds = creds // the budget's report stream goes the same way
	return xdsclient.New(xdsclient.Options{
		ServerAddr:  cp.Address,
		NodeID:      cp.NodeID,
		Cluster:     "tenantguard-sidecar",
		Delta:       cp.Delta,
		CacheFile:   cp.CacheFile,
		Token:       cp.Token,
		Credentials: creds,
		Apply:       sc.applyPolicy,
		Logger:      sc.log.With("component", "xds"),
		Registerer:  reg,
	}), nil
}

// applyPolicy compiles a pushed policy, checks it against the upstream
// databases, and swaps it in. An error NACKs the version and leaves the
// policy in force unchanged.
//
// Of the redis section, allow_scripting and emulate apply to every Redis
// connection's next command; namespace cannot change at runtime (keys
// would move), so a policy asking for another layout than the running one
// is NACKed. A missing redis section means the configuration's rules.
// sessions.end_mode applies to both listeners from the next session end.
func (sc *Sidecar) applyPolicy(version string, p *policypb.Policy) error {
	if err := sc.checkRedisNamespace(p.GetRedis()); err != nil {
		return fmt.Errorf("policy version %s: %w", version, err)
	}
	spec, err := policypb.ToSpec(p)
	if err != nil {
		return err
	}
	spec.Version = version
	snap, err := policy.Compile(spec)
	if err != nil {
		return err
	}
	if err := sc.checkPlacement(snap); err != nil {
		return fmt.Errorf("policy version %s: %w", version, err)
	}
	// With isolation on, a policy naming a table that the upstream does not
	// row-isolate (pg bootstrap not run for it) is refused here, by the one
	// who can see the database: the control plane cannot. The check costs
	// an upstream login and a few catalog queries, so it runs only when the
	// tables differ from those last checked; a push that changes tenants,
	// permissions or limits applies at once.
	// The same holds for a cluster the policy names for the first time
	// (or names anew): its upstreams are checked before any tenant moves
	// there.
	upstreams := sc.pg.UpstreamKeys(snap)
	if !slices.Equal(snap.Tables(), sc.checkedTables) || !slices.Equal(upstreams, sc.checkedUpstreams) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		warnings, err := sc.pg.CheckPolicy(ctx, snap)
		for _, w := range warnings {
			sc.log.Warn("isolation check", "version", version, "warning", w)
		}
		if err != nil {
			return fmt.Errorf("policy version %s does not hold on this sidecar's upstream: %w", version, err)
		}
		sc.checkedTables = slices.Clone(snap.Tables())
		sc.checkedUpstreams = upstreams
	}
	prev := sc.policy.Load()
	sc.SetPolicy(snap)
	// A version pausing a tenant (a move's switch) is accepted once the
	// tenant's transactions in progress have drained: the ACK tells the
	// control plane that nothing of the tenant runs on its cluster.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err = sc.pg.WaitPaused(ctx)
	cancel()
	if err != nil {
		sc.SetPolicy(prev)
		return fmt.Errorf("policy version %s: %w", version, err)
	}
	sc.applyRedisRules(p.GetRedis())
	sc.applyEndMode(version, p.GetSessions())
	return nil
}

// checkPlacement refuses a placement this sidecar cannot serve: a
// PostgreSQL or Redis upstream naming credentials its configuration lacks
// (and, with a Redis listener, what proxy/redis CheckPlacement refuses).
func (sc *Sidecar) checkPlacement(snap *policy.Snapshot) error {
	if err := sc.pg.CheckPlacement(snap); err != nil {
		return err
	}
	if sc.redis == nil {
		return nil
	}
	return sc.redis.CheckPlacement(snap)
}

// checkRedisNamespace refuses rules whose namespace mode is not the one
// the Redis listener runs with: every tenant's keys would be looked up
// under another prefix. Without a Redis listener there is nothing to check.
func (sc *Sidecar) checkRedisNamespace(r *policypb.RedisRules) error {
	if sc.redis == nil || r == nil {
		return nil
	}
	want, ok := namespaceMode(r.GetNamespace())
	if !ok {
		return fmt.Errorf("redis.namespace: %v is not a namespace mode", r.GetNamespace())
	}
	if running := sc.cfg.Redis.Namespace; want != running {
		return fmt.Errorf("redis.namespace %q differs from the running %q: changing the key layout moves every tenant's keys, so it needs a restart with the new mode in the configuration (and the keys migrated)",
			r.GetNamespace().ConfigName(), configName(running))
	}
	return nil
}

// applyRedisRules makes the pushed command rules, or the configuration's
// when r is nil, those of every Redis connection's next command.
func (sc *Sidecar) applyRedisRules(r *policypb.RedisRules) {
	if sc.redis == nil {
		return
	}
	if r == nil {
		sc.redis.SetCommandRules(!sc.cfg.Redis.DisableScripting, sc.cfg.Redis.Emulate)
		return
	}
	sc.redis.SetCommandRules(r.ScriptingAllowed(), r.EmulateSet())
}

// applyEndMode applies a pushed sessions.end_mode to both listeners, from
// the next session end on; without one (no section, or the mode unset) the
// configured mode applies.
func (sc *Sidecar) applyEndMode(version string, s *policypb.SessionSettings) {
	mode := sc.endMode
	if s != nil && s.GetEndMode() != policypb.SessionEndMode_SESSION_END_MODE_UNSPECIFIED {
		mode = s.GetEndMode().EndMode()
	}
	if mode == "" {
		mode = policy.SessionEndBoundary
	}
	err := sc.pg.SetSessionEnd(mode)
	if sc.redis != nil && err == nil {
		err = sc.redis.SetSessionEnd(mode)
	}
	if err != nil {
		sc.log.Error("sessions.end_mode", "version", version, "error", err)
	}
}

// namespaceMode is m as the Redis listener names it.
func namespaceMode(m policypb.NamespaceMode) (namespace.Mode, bool) {
	switch m.ConfigName() {
	case "spread":
		return namespace.Spread, true
	case "one-slot":
		return namespace.OneSlot, true
	}
	return 0, false
}

// configName is m as the configuration's redis.namespace names it.
func configName(m namespace.Mode) string {
	if m == namespace.OneSlot {
		return "one-slot"
	}
	return "spread"
}
