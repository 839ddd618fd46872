package pg

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// Pausing a tenant.
//
// A paused tenant's clients keep their connections, but a transaction
// that has not started waits at attach (the gate) until the tenant is let
// go; transactions in progress run to their end. Two things pause a
// tenant, independently: the admin console's PAUSE (until RESUME) and the
// policy's Tenant.Paused (until a version without it), which a tenant
// move sets for its switch between clusters. The gate opens when neither
// holds it.
//
// A policy pause must mean, when the sidecar accepts the version, that
// nothing of the tenant runs on its cluster any more: the control plane
// then reads the source's last WAL position and switches the tenant over.
// So WaitPaused waits the transactions in progress out (and ends, after a
// bound, those that do not finish), a session-pooled client (whose server
// connection is its session and never leaves it) is ended at its next
// transaction boundary, and a client that took a server connection just as
// the pause came gives it back and waits (attach checks the gate again
// after the pool has granted one).

// pauseReason says why a tenant is paused: a bit each.
type pauseReason uint8

const (
	pauseConsole pauseReason = 1 << iota // PAUSE from the admin console
	pausePolicy                          // Tenant.Paused in the policy in force
)

// DefaultPauseDrainTimeout is Config.PauseDrainTimeout's default.
const DefaultPauseDrainTimeout = 10 * time.Second

// setPause adds or removes one reason for tenant's pause, creating the
// gate when the first comes and opening it when the last goes. It reports
// whether the tenant was paused before.
func (srv *Server) setPause(tenant string, why pauseReason, on bool) (was bool) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.setPauseLocked(tenant, why, on)
}

func (srv *Server) setPauseLocked(tenant string, why pauseReason, on bool) (was bool) {
	old := srv.pauseReasons[tenant]
	next := old &^ why
	if on {
		next = old | why
	}
	if next == old {
		return old != 0
	}
	if next == 0 {
		delete(srv.pauseReasons, tenant)
	} else {
		srv.pauseReasons[tenant] = next
	}
	switch {
	case old == 0: // the first reason: close the gate
		gates := maps.Clone(*srv.pausedTenants.Load())
		gates[tenant] = make(chan struct{})
		srv.pausedTenants.Store(&gates)
	case next == 0: // the last reason went: open it
		gates := maps.Clone(*srv.pausedTenants.Load())
		ch := gates[tenant]
		delete(gates, tenant)
		srv.pausedTenants.Store(&gates)
		close(ch)
	}
	return old != 0
}

func (srv *Server) paused(tenant string) bool { return srv.pausedGate(tenant) != nil }

// pausedGate returns a channel closed when tenant is let go, or nil when
// it is not paused. It takes no lock: every transaction start asks.
func (srv *Server) pausedGate(tenant string) chan struct{} {
	return (*srv.pausedTenants.Load())[tenant]
}

// busy counts the server connections tenant holds in every pool (the
// configured upstream's and the clusters'): its transactions in progress,
// and its session-pooled clients' sessions.
func (srv *Server) busy(tenant string) int {
	n := 0
	for _, p := range srv.pools {
		n += p.stats().leased[tenant]
	}
	srv.pmu.Lock()
	routes := slices.Collect(maps.Values(srv.routes))
	srv.pmu.Unlock()
	for _, p := range routes {
		n += p.stats().leased[tenant]
	}
	return n
}

// waitIdle waits until tenant holds no server connection, up to deadline.
func (srv *Server) waitIdle(ctx context.Context, tenant string, deadline time.Time) (busy int, err error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if busy = srv.busy(tenant); busy == 0 {
			return 0, nil
		}
		if !time.Now().Before(deadline) {
			return busy, nil
		}
		select {
		case <-ctx.Done():
			return busy, ctx.Err()
		case <-tick.C:
		}
	}
}

// pause is the console's PAUSE: tenant's clients wait before their next
// transaction (as in PgBouncer's PAUSE), and it waits up to limit for the
// transactions in progress to finish.
func (srv *Server) pause(ctx context.Context, tenant string, limit time.Duration) error {
	srv.setPause(tenant, pauseConsole, true)
	srv.log.Info("tenant paused from the admin console", "tenant", tenant)
	busy, err := srv.waitIdle(ctx, tenant, time.Now().Add(limit))
	if err != nil {
		return err
	}
	if busy > 0 {
		return fmt.Errorf("%d of its transactions are still in progress after %s", busy, limit)
	}
	return nil
}

// resume is the console's RESUME: it lifts the console's pause (a pause
// the policy holds stays until the policy lets the tenant go).
func (srv *Server) resume(tenant string) {
	srv.setPause(tenant, pauseConsole, false)
	if srv.paused(tenant) {
		srv.log.Info("tenant resumed from the admin console, but the policy still pauses it", "tenant", tenant)
		return
	}
	srv.log.Info("tenant resumed from the admin console", "tenant", tenant)
}

// applyPolicyPauses makes the gates follow snap's paused tenants; it
// returns those snap pauses. Called by Reconcile, after the swap, so a
// client let go finds the new snapshot (a move's new cluster) in the store.
func (srv *Server) applyPolicyPauses(snap *policy.Snapshot) []string {
	var want []string
	for _, id := range snap.TenantIDs() {
		if t, ok := snap.Tenant(id); ok && t.Paused {
			want = append(want, id)
		}
	}
	srv.mu.Lock()
	var let []string
	for id, why := range srv.pauseReasons {
		if why&pausePolicy != 0 && !slices.Contains(want, id) {
			let = append(let, id)
		}
	}
	for _, id := range let {
		srv.setPauseLocked(id, pausePolicy, false)
	}
	var added []string
	for _, id := range want {
		if srv.pauseReasons[id]&pausePolicy == 0 {
			added = append(added, id)
		}
		srv.setPauseLocked(id, pausePolicy, true)
	}
	srv.mu.Unlock()
	if len(added) > 0 {
		srv.log.Info("tenants paused by the policy", "tenants", strings.Join(added, ","), "version", snap.Version())
	}
	if len(let) > 0 {
		srv.log.Info("tenants let go by the policy", "tenants", strings.Join(let, ","), "version", snap.Version())
	}
	return want
}

// WaitPaused waits until no tenant the policy in force pauses has a
// transaction in progress on this listener, so that the sidecar accepts
// the version only once they have drained: up to Config.PauseDrainTimeout,
// after which the clients still in a transaction are ended (FATAL 57P01,
// the transaction rolled back, its server connection closed), and then
// briefly again. It returns an error naming what is still busy, or ctx's.
func (srv *Server) WaitPaused(ctx context.Context) error {
	snap := srv.policy.Load()
	var tenants []string
	for _, id := range snap.TenantIDs() {
		if t, ok := snap.Tenant(id); ok && t.Paused {
			tenants = append(tenants, id)
		}
	}
	if len(tenants) == 0 {
		return nil
	}
	deadline := time.Now().Add(srv.cfg.PauseDrainTimeout)
	var still []string
	for _, id := range tenants {
		busy, err := srv.waitIdle(ctx, id, deadline)
		if err != nil {
			return err
		}
		if busy == 0 {
			continue
		}
		n := srv.endTransactions(id)
		srv.log.Warn("paused tenant's transactions did not finish in time; ended them", "tenant", id,
			"busy", busy, "ended", n, "pause_drain_timeout", srv.cfg.PauseDrainTimeout)
		if busy, err = srv.waitIdle(ctx, id, time.Now().Add(5*time.Second)); err != nil {
			return err
		}
		if busy > 0 {
			still = append(still, fmt.Sprintf("%s (%d)", id, busy))
		}
	}
	if len(still) > 0 {
		return fmt.Errorf("paused tenants still hold server connections: %s", strings.Join(still, ", "))
	}
	return nil
}

// endTransactions ends tenant's clients that hold a server connection now.
func (srv *Server) endTransactions(tenant string) int {
	srv.mu.Lock()
	var ends []*clientConn
	for _, s := range srv.clients {
		if s.tenant != tenant {
			continue
		}
		if sc := s.sc.Load(); sc != nil {
			ends = append(ends, s)
		}
	}
	srv.mu.Unlock()
	for _, s := range ends {
		s.srv.metrics.sessionsEnded.WithLabelValues("pause_drain_timeout").Inc()
		s.end(wire.Fatalf(wire.CodeAdminShutdown, "tenantguard: tenant %s is paused (being moved) and this transaction did not finish within %s; it was rolled back", tenant, srv.cfg.PauseDrainTimeout), policy.SessionEndImmediate)
	}
	return len(ends)
}

// pausedSession ends a session-pooled client of a tenant the policy
// pauses, at its transaction boundary: its session lives on a server
// connection that cannot wait at the gate nor move with the tenant. It
// reconnects, and its next transaction waits at the gate.
func (s *clientConn) pausedSession() {
	if s.ending() {
		return
	}
	s.srv.metrics.sessionsEnded.WithLabelValues("tenant_paused").Inc()
	s.srv.log.Info("tenant paused by the policy; ending session-pooled client at its transaction boundary", "tenant", s.tenant, "session", s.key.pid)
	s.end(wire.Fatalf(wire.CodeAdminShutdown, "tenantguard: tenant %s is paused (being moved to another cluster); reconnect: the next transaction waits until it is let go", s.tenant), policy.SessionEndBoundary)
}
