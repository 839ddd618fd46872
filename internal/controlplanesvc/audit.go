package controlplanesvc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
)

// auditWatch verifies the audit chain in full at start and every
// fullEvery, and incrementally (from the last verified entry) every
// every, so that an alert fires when someone alters the store behind the
// control plane's back. The store exports the results
// (tenantguard_controlplane_audit_*).
type auditWatch struct {
	store     *store.Store
	log       *slog.Logger
	every     time.Duration
	fullEvery time.Duration
}

// check verifies the chain once, within its schedule's interval (a full
// check of a long history can take a while: about 70 µs per signed entry).
func (a *auditWatch) check(ctx context.Context, mode store.VerifyMode) {
	timeout := a.every
	if mode == store.VerifyFull {
		timeout = a.fullEvery
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	started := time.Now()
	rep, err := a.store.VerifyAudit(ctx, mode)
	switch {
	case err == nil:
		a.log.Debug("audit chain verified", "mode", rep.Mode.String(), "checked", rep.Checked, "verified_seq", rep.VerifiedSeq,
			"keyed_from_seq", rep.KeyedFromSeq, "took", time.Since(started))
	case errors.Is(err, store.ErrTampered):
		a.log.Error("audit chain does not verify", "mode", rep.Mode.String(), "verified_seq", rep.VerifiedSeq, "error", err)
	default:
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			a.log.Warn("audit chain not checked", "mode", rep.Mode.String(), "error", err)
		}
	}
}

// run checks in full at once, then on both schedules until stop is
// closed.
func (a *auditWatch) run(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	a.check(ctx, store.VerifyFull)
	inc, full := time.NewTicker(a.every), time.NewTicker(a.fullEvery)
	defer inc.Stop()
	defer full.Stop()
	for {
		select {
		case <-stop:
			return
		case <-full.C:
			a.check(ctx, store.VerifyFull)
		case <-inc.C:
			a.check(ctx, store.VerifyIncremental)
		}
	}
}
