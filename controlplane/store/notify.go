package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyChannel is the PostgreSQL NOTIFY channel a writer signals on, in
// the transaction that inserts the version, with the version number as
// payload: the notification is delivered if and only if the version commits.
const notifyChannel = "tenantguard_cp_versions"

// ListenerApplicationName is the application_name of the Store's listener
// connection (pg_stat_activity shows it).
const ListenerApplicationName = "tenantguard-controlplane-listener"

// Backoff between attempts to re-establish the listener.
const (
	listenBackoffMin = 50 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	// readTimeout bounds a catch-up read after a notification or reconnect.
	readTimeout = 10 * time.Second
)

// Subscribe returns a channel that receives every new current version:
// those this Store writes and those other control planes write to the
// database. It holds at most one version: a reader that falls behind gets
// the newest one, never a stale queue (an xDS server needs only the
// newest). The newest version known, if any, is in the channel at once.
// Versions arrive in increasing order. cancel ends the subscription; Close
// ends all and closes their channels.
func (s *Store) Subscribe() (<-chan Version, func()) {
	ch := make(chan Version, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(ch)
		return ch, func() {}
	}
	if s.latest != nil {
		ch <- *s.latest
	}
	s.subs[ch] = struct{}{}
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[ch]; ok {
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// publish hands v to every subscriber unless a version as new was
// already handed out (the writer and the listener both publish).
func (s *Store) publish(v Version) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || (s.latest != nil && s.latest.Version >= v.Version) {
		return
	}
	s.latest = &v
	s.curVersion.Store(v.Version)
	for ch := range s.subs {
		// Only publish sends, under mu, so after draining a stale value
		// the send cannot block.
		select {
		case ch <- v:
		default:
			select {
			case <-ch:
			default:
			}
			ch <- v
		}
	}
}

// latestVersion is the newest version published, 0 if none.
func (s *Store) latestVersion() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil {
		return 0
	}
	return s.latest.Version
}

// listen opens the listener's own connection (outside the pool: it is held
// for the Store's lifetime) and LISTENs.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.listenCfg)
	if err != nil {
		return nil, fmt.Errorf("listener: connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("listener: %w", err)
	}
	s.listens.Add(1)
	s.listenUp.Store(true)
	return conn, nil
}

// listenLoop owns the listener connection until ctx ends. When the
// connection fails it reconnects with exponential backoff and then reads
// the current version, since notifications sent while it was away are lost.
func (s *Store) listenLoop(ctx context.Context, conn *pgx.Conn) {
	defer close(s.done)
	backoff := listenBackoffMin
	for {
		if conn == nil {
			var err error
			conn, err = s.listen(ctx)
			if err == nil {
				err = s.catchUp(ctx)
				if err != nil {
					s.drop(conn)
					conn = nil
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("policy listener: reconnect failed", "error", err, "retry_in", backoff)
				if !sleep(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, listenBackoffMax)
				continue
			}
			s.log.Info("policy listener: reconnected", "version", s.latestVersion())
			backoff = listenBackoffMin
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			s.drop(conn)
			conn = nil
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("policy listener: connection lost", "error", err)
			// Jitter the first retry so control planes cut off together
			// do not reconnect in step.
			if !sleep(ctx, rand.N(listenBackoffMin)) {
				return
			}
			continue
		}
		if err := s.onNotification(ctx, n.Payload); err != nil {
			if ctx.Err() != nil {
				s.drop(conn)
				return
			}
			// The version could not be read: start over, which reads
			// the current version once connected again.
			s.log.Warn("policy listener: read after notification failed", "error", err)
			s.drop(conn)
			conn = nil
		}
	}
}

// onNotification reads and publishes the current version when the
// notified one is newer than what subscribers have.
func (s *Store) onNotification(ctx context.Context, payload string) error {
	n, err := strconv.ParseInt(payload, 10, 64)
	if err != nil {
		s.log.Warn("policy listener: ignoring a notification that is not a version number", "payload_bytes", len(payload))
		return nil
	}
	if n <= s.latestVersion() {
		return nil
	}
	return s.catchUp(ctx)
}

// catchUp reads the current version and publishes it if it is newer.
func (s *Store) catchUp(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	v, err := s.Current(rctx)
	if errors.Is(err, ErrEmpty) {
		return nil
	}
	if err != nil {
		return err
	}
	s.publish(v)
	return nil
}

func (s *Store) drop(conn *pgx.Conn) {
	s.listenUp.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
