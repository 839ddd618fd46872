package sidecar

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
)

// newPolicyClient returns the xDS client that keeps the sidecar's policy
// current, or nil when the policy is the configuration file's.
func (sc *Sidecar) newPolicyClient(reg prometheus.Registerer) *xdsclient.Client {
	cp := sc.cfg.ControlPlane
	if cp == nil {
		return nil
	}
	return xdsclient.New(xdsclient.Options{
		ServerAddr: cp.Address,
		NodeID:     cp.NodeID,
		Cluster:    "tenantguard-sidecar",
		Delta:      cp.Delta,
		CacheFile:  cp.CacheFile,
		Apply:      sc.applyPolicy,
		Logger:     sc.log.With("component", "xds"),
		Registerer: reg,
	})
}

// applyPolicy compiles a pushed policy, checks it against the upstream
// databases, and swaps it in. An error NACKs the version and leaves the
// policy in force unchanged.
func (sc *Sidecar) applyPolicy(version string, p *policypb.Policy) error {
	spec, err := policypb.ToSpec(p)
	if err != nil {
		return err
	}
	spec.Version = version
	snap, err := policy.Compile(spec)
	if err != nil {
		return err
	}
	// With isolation on, a policy naming a table that the upstream does not
	// row-isolate (pg bootstrap not run for it) is refused here, by the one
	// who can see the database: the control plane cannot.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	warnings, err := sc.pg.CheckPolicy(ctx, snap)
	for _, w := range warnings {
		sc.log.Warn("isolation check", "version", version, "warning", w)
	}
	if err != nil {
		return fmt.Errorf("policy version %s does not hold on this sidecar's upstream: %w", version, err)
	}
	sc.SetPolicy(snap)
	return nil
}
