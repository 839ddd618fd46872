package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/policy"
)

// Subscription timing.
const (
	// pingInterval: the subscription is pinged after this long without a
	// message, and counts as broken when the next interval brings nothing
	// either, so a store that vanishes without closing the connection is
	// noticed within two intervals.
	pingInterval = time.Second
	// Reconnect backoff, doubling from min to max while the store stays
	// unreachable.
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
	// recheckBatch bounds one EXISTS pipeline after a reconnect.
	recheckBatch = 1000
)

// linkState is the state of the revocation subscription.
type linkState uint8

const (
	linkConnecting linkState = iota // the first attempt is still running
	linkUp
	linkDown
)

// link is one period of the subscription's life. It is immutable: every
// transition stores a new one. A verdict remembers the up period it was
// made in and is good only while that period lasts, or, with a grace
// period, during the outage right after it. That discards every older
// verdict on a reconnect without touching the cache (ristretto's Clear is
// not safe alongside Get and Set).
type link struct {
	state  linkState
	since  time.Time // Config.Now when this period began
	prevUp *link     // for linkDown: the up period the outage ended, nil if never up
}

// subscribeLoop is the subscriber goroutine: it keeps one subscription to
// the revocation channel, reconnecting with backoff, and tracks whether the
// store is reachable.
func (v *Verifier) subscribeLoop(ctx context.Context) {
	defer v.wg.Done()
	backoff := minBackoff
	for {
		ps := v.newPubSub(ctx)
		if ps == nil {
			return
		}
		established, err := v.receive(ctx, ps)
		_ = ps.Close()
		if ctx.Err() != nil {
			return
		}
		v.setDown(err)
		if established {
			backoff = minBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// newPubSub subscribes to the channel, or returns nil once Close has
// begun. Close closes the PubSub it finds, which ends a blocked receive.
func (v *Verifier) newPubSub(ctx context.Context) *redis.PubSub {
	v.psMu.Lock()
	defer v.psMu.Unlock()
	if v.closing {
		return nil
	}
	// A failed SUBSCRIBE shows up as the first receive's error.
	v.ps = v.rdb.Subscribe(ctx, v.cfg.Channel)
	return v.ps
}

// receive reads the subscription until it fails, reporting whether it was
// established at all.
func (v *Verifier) receive(ctx context.Context, ps *redis.PubSub) (established bool, err error) {
	awaitingPong := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, pingInterval)
		if err != nil {
			if ctx.Err() != nil {
				return established, ctx.Err()
			}
			if !isTimeout(err) {
				return established, err
			}
			if awaitingPong {
				return established, fmt.Errorf("no reply to PING within %s", pingInterval)
			}
			if err := ps.Ping(ctx); err != nil {
				return established, err
			}
			awaitingPong = true
			continue
		}
		awaitingPong = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == v.cfg.Channel {
				established = true
				if err := v.setUp(ctx); err != nil {
					return established, err
				}
			}
		case *redis.Message:
			v.onRevocation(m.Payload)
		}
	}
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// setUp records that the subscription is (again) established. Pub/sub is
// at-most-once, so revocations published while it was down are lost:
// verdicts cached before are dropped (by the new link period) and the
// sessions of open leases are re-checked.
func (v *Verifier) setUp(ctx context.Context) error {
	old := v.link.Load()
	if old.state == linkUp {
		return nil
	}
	now := v.cfg.Now()
	v.link.Store(&link{state: linkUp, since: now})
	v.m.storeUp.Set(1)
	v.readyOnce.Do(func() { close(v.ready) })
	v.poke()
	if old.state == linkDown {
		v.log.Info("session store reachable again", "outage", now.Sub(old.since).Round(time.Millisecond))
	} else {
		v.log.Debug("session store subscription up", "channel", v.cfg.Channel)
	}
	return v.recheck(ctx)
}

// setDown records that the store is unreachable.
func (v *Verifier) setDown(cause error) {
	old := v.link.Load()
	if old.state == linkDown {
		return
	}
	nl := &link{state: linkDown, since: v.cfg.Now()}
	if old.state == linkUp {
		nl.prevUp = old
	}
	v.link.Store(nl)
	v.m.storeUp.Set(0)
	v.readyOnce.Do(func() { close(v.ready) })
	v.poke() // with Grace 0 the watcher ends open leases now
	v.log.Warn("session store unreachable; uncached tokens are refused", "error", cause, "grace", v.cfg.Grace)
}

// recheck ends the leases of sessions that are no longer in the store.
func (v *Verifier) recheck(ctx context.Context) error {
	sts := v.watched()
	for len(sts) > 0 {
		batch := sts[:min(len(sts), recheckBatch)]
		sts = sts[len(batch):]
		pipe := v.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, st := range batch {
			cmds[i] = pipe.Exists(ctx, v.keys.session(st.idHex))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("re-check %d watched sessions: %w", len(batch), err)
		}
		for i, st := range batch {
			if cmds[i].Val() == 0 {
				v.revokeLocal(st.id, policy.ErrSessionEnded)
			}
		}
	}
	return nil
}

// onRevocation handles one message on the revocation channel.
func (v *Verifier) onRevocation(payload string) {
	v.m.revocations.Inc()
	id, ok := parseID(payload)
	if !ok {
		v.log.Warn("ignoring a revocation message that is not a session id", "bytes", len(payload))
		return
	}
	if v.revokeLocal(id, policy.ErrSessionEnded) {
		v.log.Debug("session revoked", "session", payload)
	}
}
