package pg

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// The result cache's listener: one upstream connection per pool, as the
// pool's role, that LISTENs on rls.CacheChannel, where the invalidation
// triggers pg bootstrap installs notify every committed write (through any
// sidecar, or straight to the database), and reads the catalog. The cache
// serves only while it is up: it is set up (LISTEN, then the catalog) before
// the cache's view is published, and when the connection fails the view
// is withdrawn and every entry deleted before anything is served again, so
// no notification lost while it was down can leave a stale entry behind.
// It also answers barriers: a round trip after which every notification
// of a transaction that committed before the barrier was asked has been
// handled (PostgreSQL signals listeners before the committing client's
// ReadyForQuery, and a listening backend delivers pending notifications
// before its next ReadyForQuery).

// cacheRefreshEvery is how often the listener re-reads the catalog: new
// triggers, partitions and same-named relations are seen that late.
var cacheRefreshEvery = time.Minute

// listenerBackoff bounds the wait between reconnects.
const listenerBackoffMax = 5 * time.Second

// listen starts the listener goroutine; close stops it.
func (rc *resultCache) listen() {
	go rc.listenLoop()
}

// barrierState coalesces barriers: every request waits for the first
// round trip that starts after it.
type barrierState struct {
	mu   sync.Mutex
	next chan struct{} // closed when the next round trip is done; nil if none asked
	wake context.CancelFunc
}

func (rc *resultCache) listenLoop() {
	defer close(rc.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-rc.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := rc.session(ctx)
		rc.down()
		if ctx.Err() != nil {
			return
		}
		rc.log.Warn("result cache listener lost; cache flushed, reconnecting", "error", err)
		select {
		case <-time.After(delay): // backoff between attempts, not synchronisation
		case <-ctx.Done():
			return
		}
		delay = min(delay*2, listenerBackoffMax)
	}
}

// down withdraws the view and empties the cache.
func (rc *resultCache) down() {
	if rc.view.Swap(nil) != nil {
		rc.upSince.Store(0)
		rc.metrics.listener.WithLabelValues(rc.pool.key).Set(0)
		rc.flush("listener_down")
	}
	rc.releaseBarriers()
}

// session runs one listening connection until it fails or ctx ends.
func (rc *resultCache) session(ctx context.Context) error {
	cfg := rc.pool.conf.Copy()
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { rc.notification(n.Payload) }
	cfg.RuntimeParams["application_name"] = "tenantguard result cache"
	dctx, cancel := context.WithTimeout(ctx, rc.pool.cfg.ConnectTimeout)
	conn, err := pgconn.ConnectConfig(dctx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if err := rc.exec(ctx, conn, "LISTEN "+quoteIdent(rls.CacheChannel)); err != nil {
		return err
	}
	v, err := rc.loadCatalog(ctx, conn)
	if err != nil {
		return err
	}
	rc.view.Store(v)
	rc.upSince.Store(time.Now().UnixNano())
	rc.metrics.listener.WithLabelValues(rc.pool.key).Set(1)
	rc.log.Info("result cache listening", "tables", len(v.tables))
	refresh := time.Now().Add(cacheRefreshEvery)
	for {
		wctx, wake := context.WithDeadline(ctx, refresh)
		rc.barrier.mu.Lock()
		rc.barrier.wake = wake
		pending := rc.barrier.next != nil
		rc.barrier.mu.Unlock()
		if pending {
			wake()
		}
		err := conn.WaitForNotification(wctx)
		wake()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			continue // handled by OnNotification
		case !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err):
			return err
		}
		if conn.IsClosed() {
			return errors.New("connection closed")
		}
		if ch := rc.takeBarrier(); ch != nil {
			err := rc.exec(ctx, conn, "SELECT 1")
			close(ch)
			if err != nil {
				return err
			}
		}
		if !time.Now().Before(refresh) {
			nv, err := rc.loadCatalog(ctx, conn)
			if err != nil {
				return err
			}
			if nv.digest != v.digest {
				rc.log.Info("catalog changed; result cache flushed", "tables", len(nv.tables))
				rc.view.Store(nv)
				rc.flush("catalog_changed")
				v = nv
			}
			refresh = time.Now().Add(cacheRefreshEvery)
		}
	}
}

// takeBarrier returns the waiters' channel of the round trip about to
// start, if any asked.
func (rc *resultCache) takeBarrier() chan struct{} {
	rc.barrier.mu.Lock()
	defer rc.barrier.mu.Unlock()
	ch := rc.barrier.next
	rc.barrier.next = nil
	return ch
}

// releaseBarriers lets waiting barriers go when the listener is down:
// the cache is empty and serves nothing until it is back.
func (rc *resultCache) releaseBarriers() {
	rc.barrier.mu.Lock()
	ch := rc.barrier.next
	rc.barrier.next = nil
	rc.barrier.wake = nil
	rc.barrier.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// waitBarrier returns once every notification of transactions committed
// before the call has been handled, the listener is down, or ctx ends.
func (rc *resultCache) waitBarrier(ctx context.Context) {
	if rc.view.Load() == nil {
		return
	}
	rc.barrier.mu.Lock()
	ch := rc.barrier.next
	if ch == nil {
		ch = make(chan struct{})
		rc.barrier.next = ch
	}
	wake := rc.barrier.wake
	rc.barrier.mu.Unlock()
	if wake != nil {
		wake()
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// exec runs a statement on the listening connection.
func (rc *resultCache) exec(ctx context.Context, conn *pgconn.PgConn, sql string) error {
	qctx, cancel := context.WithTimeout(ctx, rc.pool.cfg.ConnectTimeout)
	defer cancel()
	_, err := conn.Exec(qctx, sql).ReadAll()
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(sql)[0], err)
	}
	return nil
}

// loadCatalog reads the tables with the invalidation trigger.
func (rc *resultCache) loadCatalog(ctx context.Context, conn *pgconn.PgConn) (*cacheView, error) {
	qctx, cancel := context.WithTimeout(ctx, rc.pool.cfg.ConnectTimeout)
	defer cancel()
	results, err := conn.Exec(qctx, rls.CacheCatalogSQL+"; SELECT pg_catalog.current_setting('default_transaction_isolation')").ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	if len(results) != 2 || len(results[1].Rows) != 1 {
		return nil, errors.New("read catalog: unexpected reply")
	}
	m := pgtype.NewMap()
	var rows []catalogRow
	for _, r := range results[0].Rows {
		if len(r) != 5 {
			return nil, errors.New("read catalog: unexpected row")
		}
		cr := catalogRow{rel: string(r[0]), root: string(r[1]), writesOthers: string(r[2]) == "t"}
		for i, dst := range []*[]string{&cr.cascade, &cr.shadows} {
			if err := m.Scan(pgtype.TextArrayOID, pgtype.TextFormatCode, r[3+i], dst); err != nil {
				return nil, fmt.Errorf("read catalog: %w", err)
			}
		}
		rows = append(rows, cr)
	}
	return newCacheView(rows, string(results[1].Rows[0][0])), nil
}

// notification handles one invalidation: "<table> <tenant>", tenant empty
// for a write no tenant is bound to (an administrator's, a cascade).
func (rc *resultCache) notification(payload string) {
	rc.notified.Add(1)
	v := rc.view.Load()
	if v == nil {
		return
	}
	table, tenant, _ := strings.Cut(payload, " ")
	t, ok := v.byName[table]
	if !ok {
		// A table this view does not know: a trigger installed since the
		// catalog was read. Nothing cached reads it.
		return
	}
	rc.metrics.notified.WithLabelValues(rc.pool.key, "notification").Inc()
	isolated := false
	if cp := v.pol.Load(); cp != nil && t < len(cp.isolated) {
		isolated = cp.isolated[t]
	}
	rc.invalidate(v, t, tenant, isolated)
}
