package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// moveEnv is a move step's connections: the source and the target
// cluster as their admin roles, and the policy's row-isolated tables as
// each knows them (parents first).
type moveEnv struct {
	rt       moveRoute
	name     string
	src, dst *pgx.Conn
	srcConf  MoveCluster
	tables   []*table // on the source
	dstTable map[string]*table
}

func (e *moveEnv) close() {
	for _, c := range []*pgx.Conn{e.src, e.dst} {
		if c != nil {
			_ = c.Close(context.Background())
		}
	}
}

// sessionSettings make a row's text form the same on both clusters,
// whatever their configuration (the checksums compare it).
const sessionSettings = `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres';
	SET extra_float_digits = 3; SET bytea_output = 'hex'`

// connectCluster connects to a cluster of lifecycle.move.clusters.
func (s *Service) connectCluster(ctx context.Context, name string) (*pgx.Conn, MoveCluster, error) {
	mc, ok := s.cfg.Move[name]
	if !ok {
		return nil, mc, workflow.Permanent(fmt.Errorf("cluster %q is not in the control plane's lifecycle.move.clusters: it cannot reach it", name))
	}
	conn, err := pgx.Connect(ctx, mc.AdminURL)
	if err != nil {
		return nil, mc, fmt.Errorf("connect to cluster %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, sessionSettings, pgx.QueryExecModeSimpleProtocol); err != nil {
		_ = conn.Close(context.Background())
		return nil, mc, fmt.Errorf("cluster %s: %w", name, err)
	}
	return conn, mc, nil
}

// policyTables are the policy's tables as a compiled snapshot lists them.
func policyTables(p *policypb.Policy) ([]policy.TableSpec, error) {
	spec, err := policypb.ToSpec(p)
	if err != nil {
		return nil, err
	}
	spec.Tenants = nil
	snap, err := policy.Compile(spec)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return snap.Tables(), nil
}

// openMove connects to both clusters of the move recorded by check (or
// rt, for check itself) and resolves the tables on both.
func (s *Service) openMove(ctx context.Context, r *workflow.Run, rt *moveRoute) (*moveEnv, error) {
	e := &moveEnv{name: replicationName(r)}
	if rt != nil {
		e.rt = *rt
	} else {
		var err error
		if e.rt, err = route(r); err != nil {
			return nil, err
		}
	}
	v, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	specs, err := policyTables(v.Policy)
	if err != nil {
		return nil, workflow.Permanent(err)
	}
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	if e.src, e.srcConf, err = s.connectCluster(ctx, e.rt.From); err != nil {
		return nil, err
	}
	if e.dst, _, err = s.connectCluster(ctx, e.rt.To); err != nil {
		return nil, err
	}
	if e.tables, err = resolveTables(ctx, e.src, specs); err != nil {
		return nil, fmt.Errorf("source cluster %s: %w", e.rt.From, err)
	}
	if len(e.tables) == 0 {
		return nil, workflow.Permanent(errors.New("the policy has no row-isolated table: nothing to move"))
	}
	e.dstTable = map[string]*table{}
	for _, ts := range specs {
		if ts.Shared || ts.TenantColumn == "" {
			continue
		}
		var exists bool
		if err := e.dst.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", ts.Name).Scan(&exists); err != nil {
			return nil, fmt.Errorf("target cluster %s: %w", e.rt.To, err)
		}
		if !exists {
			return nil, workflow.Permanent(fmt.Errorf("target cluster %s has no table %s: create the schema there (and run pg bootstrap) first", e.rt.To, ts.Name))
		}
	}
	dt, err := resolveTables(ctx, e.dst, specs)
	if err != nil {
		return nil, fmt.Errorf("target cluster %s: %w", e.rt.To, err)
	}
	for _, t := range dt {
		e.dstTable[t.Name] = t
	}
	ok = true
	return e, nil
}

// columnsOf describes t's columns in order: name, type, generated.
func columnsOf(ctx context.Context, conn *pgx.Conn, oid uint32) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attgenerated::text
		FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// moveCheck refuses a move that cannot work before anything is changed.
func (s *Service) moveCheck(ctx context.Context, r *workflow.Run) error {
	p, err := moveParams(r)
	if err != nil {
		return err
	}
	v, err := s.current(ctx)
	if err != nil {
		return err
	}
	pt := findTenant(v.Policy, r.Tenant)
	if pt == nil {
		return workflow.Permanent(fmt.Errorf("tenant %s is not in the policy", r.Tenant))
	}
	if pt.GetSuspended() || pt.GetPaused() {
		return workflow.Permanent(fmt.Errorf("tenant %s is suspended or paused: resume it first", r.Tenant))
	}
	spec, err := policypb.ToSpec(v.Policy)
	if err != nil {
		return workflow.Permanent(err)
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		return workflow.Permanent(fmt.Errorf("policy: %w", err))
	}
	t, _ := snap.Tenant(r.Tenant)
	from, _ := snap.PostgresCluster(t)
	if from == "" {
		return workflow.Permanent(fmt.Errorf("tenant %s is on the sidecars' configured upstream, which has no cluster name: name it in the policy's clusters (a cluster without hosts) and place the tenant there first", r.Tenant))
	}
	if c, ok := snap.Cluster(p.Postgres); !ok || c.Postgres == nil {
		return workflow.Permanent(fmt.Errorf("the policy has no PostgreSQL cluster %q", p.Postgres))
	}
	if from == p.Postgres {
		return workflow.Permanent(fmt.Errorf("tenant %s is already on cluster %s", r.Tenant, from))
	}
	rt := moveRoute{From: from, To: p.Postgres}
	e, err := s.openMove(ctx, r, &rt)
	if err != nil {
		return err
	}
	defer e.close()
	var walLevel string
	var version int
	if err := e.src.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version_num')::int").Scan(&walLevel, &version); err != nil {
		return fmt.Errorf("source cluster %s: %w", from, err)
	}
	if version < 150000 {
		return workflow.Permanent(fmt.Errorf("source cluster %s runs PostgreSQL %d: a move needs 15 or later (publication row filters)", from, version))
	}
	if walLevel != "logical" {
		return workflow.Permanent(fmt.Errorf("source cluster %s has wal_level=%s: a move replicates the tenant's rows logically and needs wal_level=logical (set it and restart the server)", from, walLevel))
	}
	var problems []string
	rows := map[string]int64{}
	for _, st := range e.tables {
		dt := e.dstTable[st.Name]
		sc, err := columnsOf(ctx, e.src, st.oid)
		if err != nil {
			return err
		}
		dc, err := columnsOf(ctx, e.dst, dt.oid)
		if err != nil {
			return err
		}
		if !slices.Equal(sc, dc) {
			problems = append(problems, fmt.Sprintf("%s has columns (%s) on the target, (%s) on the source", st.Name, strings.Join(dc, ", "), strings.Join(sc, ", ")))
		}
		var isolated bool
		if err := e.dst.QueryRow(ctx, "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = $1", dt.oid).Scan(&isolated); err != nil {
			return err
		}
		if !isolated {
			problems = append(problems, fmt.Sprintf("%s is not row-isolated on the target (run pg bootstrap there)", st.Name))
		}
		var n int64
		if err := e.dst.QueryRow(ctx, "SELECT count(*) FROM "+dt.ident+" t WHERE "+dt.tenantFilter(), r.Tenant).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			problems = append(problems, fmt.Sprintf("the target already has %d rows of tenant %s in %s", n, r.Tenant, st.Name))
		}
		if err := e.src.QueryRow(ctx, "SELECT count(*) FROM "+st.ident+" t WHERE "+st.tenantFilter(), r.Tenant).Scan(&n); err != nil {
			return err
		}
		rows[st.Name] = n
	}
	if len(problems) > 0 {
		return workflow.Permanent(fmt.Errorf("cannot move tenant %s to cluster %s: %s", r.Tenant, p.Postgres, strings.Join(problems, "; ")))
	}
	if err := r.SetResult("clusters", rt); err != nil {
		return err
	}
	if err := r.SetResult("rows", rows); err != nil {
		return err
	}
	return r.Save(ctx, rt)
}

// identityChange is a table whose replica identity the move changed, and
// what it was: "d" (default), "n" (nothing) or "i:<index>".
type identityChange map[string]string

// moveReplicaIdentity gives REPLICA IDENTITY FULL to the tables whose
// replica identity does not include the tenant column: PostgreSQL refuses
// UPDATE and DELETE on a table published with a row filter on a column
// outside it. FULL logs the whole old row of every update and delete of
// every tenant while the move runs; the old setting is put back at the
// end (and on undo).
func (s *Service) moveReplicaIdentity(ctx context.Context, r *workflow.Run) error {
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	changed := identityChange{}
	if _, err := r.Load(&changed); err != nil {
		return err
	}
	for _, t := range e.tables {
		var kind string
		var covered bool
		var index *string
		err := e.src.QueryRow(ctx, `SELECT c.relreplident::text,
				coalesce((SELECT bool_or(a.attname = $2) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
					WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END), false),
				(SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid AND i.indisreplident)
			FROM pg_class c WHERE c.oid = $1`, t.oid, t.TenantColumn).Scan(&kind, &covered, &index)
		if err != nil {
			return fmt.Errorf("replica identity of %s: %w", t.Name, err)
		}
		if kind == "f" || covered {
			continue
		}
		if _, done := changed[t.Name]; !done {
			old := kind
			if kind == "i" && index != nil {
				old = "i:" + *index
			}
			changed[t.Name] = old
			if err := r.Save(ctx, changed); err != nil { // before the change: undo finds it
				return err
			}
		}
		if _, err := e.src.Exec(ctx, "ALTER TABLE "+t.ident+" REPLICA IDENTITY FULL"); err != nil {
			return fmt.Errorf("replica identity of %s: %w", t.Name, err)
		}
	}
	if err := r.SetResult("replica_identity_full", changed); err != nil {
		return err
	}
	return r.Save(ctx, changed)
}

// restoreReplicaIdentity puts back what moveReplicaIdentity changed.
func (s *Service) restoreReplicaIdentity(ctx context.Context, r *workflow.Run) error {
	changed := identityChange{}
	if ok, err := r.Result("replica_identity_full", &changed); err != nil {
		return err
	} else if !ok {
		if _, err := r.Load(&changed); err != nil {
			return err
		}
	}
	if len(changed) == 0 {
		return nil
	}
	rt, err := route(r)
	if err != nil {
		return err
	}
	conn, _, err := s.connectCluster(ctx, rt.From)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, name := range sortedNames(changed) {
		var ident string
		if err := conn.QueryRow(ctx, `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`, name).Scan(&ident); err != nil {
			return fmt.Errorf("replica identity of %s: %w", name, err)
		}
		old := changed[name]
		clause := "DEFAULT"
		switch {
		case old == "n":
			clause = "NOTHING"
		case strings.HasPrefix(old, "i:"):
			clause = "USING INDEX " + pgx.Identifier{old[2:]}.Sanitize()
		}
		if _, err := conn.Exec(ctx, "ALTER TABLE "+ident+" REPLICA IDENTITY "+clause); err != nil {
			return fmt.Errorf("replica identity of %s: %w", name, err)
		}
	}
	return nil
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings
// on, the default since PostgreSQL 9.1). A publication's row filter and a
// subscription's connection string cannot be bind parameters.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// createPublication publishes the tenant's rows of every table at the
// source.
func (s *Service) createPublication(ctx context.Context, r *workflow.Run) error {
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	var exists bool
	if err := e.src.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", e.name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	if err := policy.CheckTenantID(r.Tenant); err != nil {
		return workflow.Permanent(err)
	}
	parts := make([]string, 0, len(e.tables))
	for _, t := range e.tables {
		parts = append(parts, t.ident+" WHERE ("+pgx.Identifier{t.TenantColumn}.Sanitize()+" = "+quoteLiteral(r.Tenant)+")")
	}
	if err := createMarkerTable(ctx, e.src); err != nil {
		return fmt.Errorf("cluster %s: %w", e.rt.From, err)
	}
	parts = append(parts, markerTable+" WHERE (name = "+quoteLiteral(e.name)+")")
	q := "CREATE PUBLICATION " + pgx.Identifier{e.name}.Sanitize() + " FOR TABLE " + strings.Join(parts, ", ") +
		" WITH (publish = 'insert, update, delete')"
	if _, err := e.src.Exec(ctx, q); err != nil {
		return fmt.Errorf("create publication on %s: %w", e.rt.From, err)
	}
	return nil
}

// dropPublication drops the publication and a replication slot of the
// move's name left at the source (a subscription that could not drop it).
func (s *Service) dropPublication(ctx context.Context, r *workflow.Run) error {
	rt, err := route(r)
	if err != nil {
		return err
	}
	conn, _, err := s.connectCluster(ctx, rt.From)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	name := replicationName(r)
	if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("drop publication on %s: %w", rt.From, err)
	}
	if err := deleteMarker(ctx, conn, name); err != nil {
		return fmt.Errorf("cluster %s: %w", rt.From, err)
	}
	return dropSlot(ctx, conn, name)
}

// dropSlot drops the replication slot name if it is left and not in use.
func dropSlot(ctx context.Context, conn *pgx.Conn, name string) error {
	var active *bool
	err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&active)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if active != nil && *active {
		return fmt.Errorf("replication slot %s is still in use", name)
	}
	_, err = conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", name)
	return err
}

// createSubscription subscribes the target to the publication, copying
// the rows there first. Its apply worker commits with synchronous_commit
// on: it reports a transaction applied once it is flushed, and with the
// default (off) that waits for the WAL writer and the worker's next
// wake-up, which made catch_up, inside the tenant's pause, take 0.4-0.8 s.
func (s *Service) createSubscription(ctx context.Context, r *workflow.Run) error {
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	exists, err := subscriptionExists(ctx, e.dst, e.name)
	if err != nil || exists {
		return err
	}
	// An attempt that died after the slot was made at the source but
	// before the subscription committed left the slot.
	if err := dropSlot(ctx, e.src, e.name); err != nil {
		return err
	}
	if err := createMarkerTable(ctx, e.dst); err != nil {
		return fmt.Errorf("cluster %s: %w", e.rt.To, err)
	}
	conninfo := e.srcConf.PublisherConninfo
	if conninfo == "" {
		conninfo = e.srcConf.AdminURL
	}
	id := pgx.Identifier{e.name}.Sanitize()
	q := "CREATE SUBSCRIPTION " + id + " CONNECTION " + quoteLiteral(conninfo) + " PUBLICATION " + id +
		" WITH (copy_data = true, create_slot = true, slot_name = " + quoteLiteral(e.name) + ", synchronous_commit = 'on')"
	if _, err := e.dst.Exec(ctx, q); err != nil {
		return fmt.Errorf("create subscription on %s: %w", e.rt.To, err)
	}
	r.Log().Info("subscription created", "from", e.rt.From, "to", e.rt.To, "name", e.name)
	return nil
}

func subscriptionExists(ctx context.Context, conn *pgx.Conn, name string) (bool, error) {
	var exists bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))", name).Scan(&exists)
	return exists, err
}

// dropSubscription drops the move's subscription at the target (and with
// it its slot at the source; when the source cannot be reached, the
// subscription is dropped without it and dropPublication drops the slot).
func dropSubscription(ctx context.Context, dst *pgx.Conn, name string) error {
	exists, err := subscriptionExists(ctx, dst, name)
	if err != nil || !exists {
		return err
	}
	id := pgx.Identifier{name}.Sanitize()
	if _, err := dst.Exec(ctx, "DROP SUBSCRIPTION "+id); err == nil {
		return nil
	}
	for _, q := range []string{"ALTER SUBSCRIPTION " + id + " DISABLE", "ALTER SUBSCRIPTION " + id + " SET (slot_name = NONE)", "DROP SUBSCRIPTION " + id} {
		if _, err := dst.Exec(ctx, q); err != nil {
			return fmt.Errorf("drop subscription %s: %w", name, err)
		}
	}
	return nil
}

// undoSubscription drops the subscription, then deletes the rows it
// copied: every row of the tenant at the target, which check found with
// none, and where nothing else writes the tenant before the switch.
func (s *Service) undoSubscription(ctx context.Context, r *workflow.Run) error {
	p, err := moveParams(r)
	if err != nil {
		return err
	}
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	if err := dropSubscription(ctx, e.dst, e.name); err != nil {
		return err
	}
	if err := deleteMarker(ctx, e.dst, e.name); err != nil {
		return fmt.Errorf("target cluster %s: %w", e.rt.To, err)
	}
	deleted := map[string]int64{}
	for i := len(e.tables) - 1; i >= 0; i-- {
		t := e.dstTable[e.tables[i].Name]
		n, err := deleteBatches(ctx, e.dst, t, r.Tenant, p.BatchSize, 0, nil, nil)
		if err != nil {
			return fmt.Errorf("target cluster %s: %w", e.rt.To, err)
		}
		deleted[t.Name] = n
	}
	return r.SetResult("deleted_at_target", deleted)
}

// replayed reads, at the source, how far the move's subscription has
// applied the source's WAL (pg_stat_replication.replay_lsn of its
// walsender: the apply worker reports the end of the last transaction it
// committed, or all it received when nothing is pending) and the source's
// insert position, and the bytes between them.
func replayed(ctx context.Context, src *pgx.Conn, name string) (insert string, replay *string, lag int64, err error) {
	err = src.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, r.replay_lsn::text,
			coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), r.replay_lsn), -1)::bigint
		FROM (SELECT 1) one LEFT JOIN pg_stat_replication r ON r.application_name = $1`, name).Scan(&insert, &replay, &lag)
	return insert, replay, lag, err
}

// subscriptionErrors reads the subscription's error counters at the
// target (pg_stat_subscription_stats, PostgreSQL 15).
func subscriptionErrors(ctx context.Context, dst *pgx.Conn, name string) (apply, sync int64, err error) {
	err = dst.QueryRow(ctx, `SELECT coalesce(sum(apply_error_count), 0)::bigint, coalesce(sum(sync_error_count), 0)::bigint
		FROM pg_stat_subscription_stats WHERE subname = $1`, name).Scan(&apply, &sync)
	return apply, sync, err
}

// settleLagBytes and settleFor: once under max_lag_bytes, wait_copied
// waits up to settleFor more for the lag to fall under settleLagBytes.
const (
	settleLagBytes = 64 << 10
	settleFor      = 2 * time.Second
)

// waitCopied waits until every table is copied and the lag is small.
func (s *Service) waitCopied(ctx context.Context, r *workflow.Run) error {
	p, err := moveParams(r)
	if err != nil {
		return err
	}
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	var want map[string]int64
	_, _ = r.Result("rows", &want)
	start := time.Now()
	deadline := start.Add(time.Duration(p.CopyTimeout))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastCount, metAt time.Time
	for {
		applyErr, syncErr, err := subscriptionErrors(ctx, e.dst, e.name)
		if err != nil {
			return err
		}
		if applyErr > 0 || syncErr > 0 {
			return workflow.Permanent(fmt.Errorf("the subscription on cluster %s failed (%d apply and %d copy errors; its server log says why)", e.rt.To, applyErr, syncErr))
		}
		var notReady int
		if err := e.dst.QueryRow(ctx, `SELECT count(*) FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid
			WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND sr.srsubstate <> 'r'`, e.name).Scan(&notReady); err != nil {
			return err
		}
		_, replay, lag, err := replayed(ctx, e.src, e.name)
		if err != nil {
			return err
		}
		caughtUp := notReady == 0 && replay != nil && lag >= 0 && lag <= p.MaxLagBytes
		if caughtUp && metAt.IsZero() {
			metAt = time.Now()
		}
		// Under max_lag_bytes, wait a little longer (settleFor at most) for
		// the lag to fall under settleLagBytes: what is left when the
		// tenant is paused, catch_up replays inside the pause.
		if caughtUp && (lag <= settleLagBytes || time.Since(metAt) >= settleFor) {
			copied, err := countTenant(ctx, e.dst, e.dstTables(), r.Tenant)
			if err != nil {
				return err
			}
			// Integers only: the audit chain's canonical JSON has no floats.
			took := time.Since(start)
			res := map[string]int64{"rows": total(copied), "ms": took.Milliseconds(), "lag_bytes": lag}
			if took > 0 {
				res["rows_per_second"] = int64(float64(total(copied)) / took.Seconds())
			}
			return r.SetResult("copy", res)
		}
		if time.Since(lastCount) >= time.Second {
			lastCount = time.Now()
			copied, err := countTenant(ctx, e.dst, e.dstTables(), r.Tenant)
			if err != nil {
				return err
			}
			msg := fmt.Sprintf("copying: %d tables not ready, lag %d bytes", notReady, lag)
			if notReady == 0 {
				msg = fmt.Sprintf("catching up: lag %d bytes", lag)
			}
			_ = r.Progress(ctx, total(copied), total(want), msg)
		}
		if time.Now().After(deadline) {
			return workflow.Permanent(fmt.Errorf("the copy to cluster %s did not finish within %s", e.rt.To, time.Duration(p.CopyTimeout)))
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}

func (e *moveEnv) dstTables() []*table {
	out := make([]*table, 0, len(e.tables))
	for _, t := range e.tables {
		out = append(out, e.dstTable[t.Name])
	}
	return out
}

// countTenant counts tenant's rows per table on conn.
func countTenant(ctx context.Context, conn *pgx.Conn, tables []*table, tenant string) (map[string]int64, error) {
	out := make(map[string]int64, len(tables))
	for _, t := range tables {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+t.ident+" t WHERE "+t.tenantFilter(), tenant).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s: %w", t.Name, err)
		}
		out[t.Name] = n
	}
	return out, nil
}

// catchUp waits, with the tenant paused everywhere, until the target has
// applied every commit of the tenant's: until a marker written at the
// source now has reached it (catchUpByMarker), or, for a publication
// without the marker, until the walsender reports the source's insert
// position replayed.
func (s *Service) catchUp(ctx context.Context, r *workflow.Run) error {
	p, err := moveParams(r)
	if err != nil {
		return err
	}
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	if marked, err := markerPublished(ctx, e.src, e.name); err != nil {
		return err
	} else if marked {
		return catchUpByMarker(ctx, r, e, time.Duration(p.CatchupTimeout))
	}
	// A move whose publication predates the marker: wait for the
	// walsender's report instead.
	var target string
	if err := e.src.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&target); err != nil {
		return err
	}
	// Flush the source's WAL past target now: the walsender sends only
	// flushed WAL, and the WAL writer would take up to wal_writer_delay
	// (a tenant commit made with synchronous_commit off may lie there).
	if err := commitFlushed(ctx, e.src, "SELECT pg_current_xact_id()"); err != nil {
		return fmt.Errorf("flush the source's WAL: %w", err)
	}
	waitFrom := time.Now()
	deadline := waitFrom.Add(time.Duration(p.CatchupTimeout))
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		var reached bool
		var replay *string
		if err := e.src.QueryRow(ctx, `SELECT r.replay_lsn::text, coalesce(r.replay_lsn >= $2::pg_lsn, false)
			FROM (SELECT 1) one LEFT JOIN pg_stat_replication r ON r.application_name = $1`, e.name, target).Scan(&replay, &reached); err != nil {
			return err
		}
		if reached {
			if err := r.SetResult("caught_up_at_lsn", target); err != nil {
				return err
			}
			return r.SetResult("catch_up_wait_ms", time.Since(waitFrom).Milliseconds())
		}
		if time.Now().After(deadline) {
			got := "nothing"
			if replay != nil {
				got = *replay
			}
			return workflow.Permanent(fmt.Errorf("cluster %s had replayed %s, not the source's %s, within %s", e.rt.To, got, target, time.Duration(p.CatchupTimeout)))
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}

// syncSequences sets the target's sequences of the moved tables to at
// least the source's, so that the tenant's next serial or identity values
// there do not collide with the copied rows (logical replication does not
// carry sequences). Sequences are shared by every tenant of a table: the
// target's only move forward, never back.
func (s *Service) syncSequences(ctx context.Context, r *workflow.Run) error {
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	set := map[string]int64{}
	for _, t := range e.tables {
		rows, err := e.src.Query(ctx, `SELECT s FROM (SELECT pg_get_serial_sequence($1, attname) s FROM pg_attribute
			WHERE attrelid = $2 AND attnum > 0 AND NOT attisdropped) q WHERE s IS NOT NULL`, t.ident, t.oid)
		if err != nil {
			return err
		}
		seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("sequences of %s: %w", t.Name, err)
		}
		for _, seq := range seqs {
			var last int64
			if err := e.src.QueryRow(ctx, "SELECT last_value FROM "+seq).Scan(&last); err != nil {
				return fmt.Errorf("sequence %s at the source: %w", seq, err)
			}
			var now int64
			if err := e.dst.QueryRow(ctx, "SELECT setval($1::regclass, greatest($2::bigint, (SELECT last_value FROM "+seq+")), true)", seq, last).Scan(&now); err != nil {
				return fmt.Errorf("sequence %s at the target: %w", seq, err)
			}
			set[seq] = now
		}
	}
	return r.SetResult("sequences", set)
}

// tableSum is one table's rows of the tenant and a checksum of them: the
// sum of 60 bits of each row's 64-bit hash (hashtextextended of its text
// form), which does not depend on the order rows are read in. It runs
// inside the tenant's pause, so the hash is PostgreSQL's own, 2.5 times
// cheaper than an MD5 of each row (100,000 rows: 45 ms against 113). Its
// value differs between a little- and a big-endian server, so a move
// between such two fails at verify, safely (the move is undone).
type tableSum struct {
	Rows     int64  `json:"rows"`
	Checksum string `json:"checksum"`
}

func sumTenant(ctx context.Context, conn *pgx.Conn, tables []*table, tenant string) (map[string]tableSum, error) {
	out := map[string]tableSum{}
	for _, t := range tables {
		var ts tableSum
		if err := conn.QueryRow(ctx, "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0) >> 4), 0)::text FROM "+
			t.ident+" t WHERE "+t.tenantFilter(), tenant).Scan(&ts.Rows, &ts.Checksum); err != nil {
			return nil, fmt.Errorf("checksum of %s: %w", t.Name, err)
		}
		out[t.Name] = ts
	}
	return out, nil
}

// moveVerify compares the tenant's rows on both clusters, read at once
// while it is paused (the source has nothing more of it to send).
func (s *Service) moveVerify(ctx context.Context, r *workflow.Run) error {
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	var src, dst map[string]tableSum
	var srcErr, dstErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		src, srcErr = sumTenant(ctx, e.src, e.tables, r.Tenant)
	}()
	dst, dstErr = sumTenant(ctx, e.dst, e.dstTables(), r.Tenant)
	wg.Wait()
	if err := errors.Join(srcErr, dstErr); err != nil {
		return err
	}
	var diff []string
	for _, name := range sortedNames(src) {
		if src[name] != dst[name] {
			diff = append(diff, fmt.Sprintf("%s: %d rows (checksum %s) at the source, %d (%s) at the target",
				name, src[name].Rows, src[name].Checksum, dst[name].Rows, dst[name].Checksum))
		}
	}
	if len(diff) > 0 {
		return workflow.Permanent(fmt.Errorf("the copy differs: %s", strings.Join(diff, "; ")))
	}
	return r.SetResult("verified", src)
}

// dropReplication ends the replication once the tenant runs on the
// target: before the source's rows are deleted, or the deletes would
// replicate.
func (s *Service) dropReplication(ctx context.Context, r *workflow.Run) error {
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	if err := dropSubscription(ctx, e.dst, e.name); err != nil {
		return err
	}
	if err := deleteMarker(ctx, e.dst, e.name); err != nil {
		return fmt.Errorf("target cluster %s: %w", e.rt.To, err)
	}
	if err := s.dropPublication(ctx, r); err != nil {
		return err
	}
	return s.restoreReplicaIdentity(ctx, r)
}

// deleteSourceRows deletes the tenant's rows at the source, children
// first, in batches (offboarding's delete).
func (s *Service) deleteSourceRows(ctx context.Context, r *workflow.Run) error {
	p, err := moveParams(r)
	if err != nil {
		return err
	}
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	if exists, err := subscriptionExists(ctx, e.dst, e.name); err != nil {
		return err
	} else if exists {
		return errors.New("the subscription still exists: the deletes would replicate")
	}
	var d deleteProgress
	if _, err := r.Load(&d); err != nil {
		return err
	}
	if d.Deleted == nil {
		d.Deleted = map[string]int64{}
	}
	base := map[string]int64{}
	for k, v := range d.Deleted {
		base[k] = v
	}
	var want map[string]int64
	_, _ = r.Result("rows", &want)
	lastSave := time.Now()
	for i := len(e.tables) - 1; i >= 0; i-- {
		t := e.tables[i]
		_, err := deleteBatches(ctx, e.src, t, r.Tenant, p.BatchSize, time.Duration(p.BatchPause), nil, func(n int64) error {
			d.Deleted[t.Name] = base[t.Name] + n
			if time.Since(lastSave) >= time.Second {
				lastSave = time.Now()
				if err := r.Save(ctx, d); err != nil {
					return err
				}
			}
			return r.Progress(ctx, total(d.Deleted), total(want), "deleting from "+t.Name+" at "+e.rt.From)
		})
		if err != nil {
			_ = r.Save(context.WithoutCancel(ctx), d)
			return err
		}
	}
	return r.Save(ctx, d)
}

// verifySourceEmpty checks that none of the tenant's rows is left at the
// source.
func (s *Service) verifySourceEmpty(ctx context.Context, r *workflow.Run) error {
	e, err := s.openMove(ctx, r, nil)
	if err != nil {
		return err
	}
	defer e.close()
	left, err := countTenant(ctx, e.src, e.tables, r.Tenant)
	if err != nil {
		return err
	}
	if n := total(left); n > 0 {
		return fmt.Errorf("%d rows of tenant %s are still on cluster %s", n, r.Tenant, e.rt.From)
	}
	// What verify counted, with the tenant paused, is what was deleted.
	var verified map[string]tableSum
	_, _ = r.Result("verified", &verified)
	deleted := map[string]int64{}
	for name, ts := range verified {
		deleted[name] = ts.Rows
	}
	return r.SetResult("deleted_at_source", deleted)
}

// markerTable is a table of the move's own on both clusters, in the
// publication with a row filter on the move's name: catch_up writes a row
// at the source once the tenant is paused and waits for it at the target.
// Logical replication applies transactions in commit order, so once the
// marker is there every commit of the tenant (all before the pause) is
// applied. It does not wait for the walsender's reports of the applied
// position (pg_stat_replication), which came about 400 ms after the
// fact. Tenants' roles have no privilege on it. A move's end (or undo)
// deletes its row and drops the table once no other move uses it.
const markerTable = "tenantguard.move_marker"

func createMarkerTable(ctx context.Context, conn *pgx.Conn) error {
	for _, q := range []string{
		"CREATE SCHEMA IF NOT EXISTS tenantguard",
		"CREATE TABLE IF NOT EXISTS " + markerTable + " (name text PRIMARY KEY, seq bigint NOT NULL)",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("move marker: %w", err)
		}
	}
	return nil
}

// markerPublished reports whether the move's publication has the marker.
func markerPublished(ctx context.Context, src *pgx.Conn, name string) (bool, error) {
	var ok bool
	err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables
		WHERE pubname = $1 AND schemaname = 'tenantguard' AND tablename = 'move_marker')`, name).Scan(&ok)
	return ok, err
}

// deleteMarker removes the move's marker row where the table exists, and
// then the table itself once no move uses it (dropMarkerIfUnused).
func deleteMarker(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, `DO $$ BEGIN
		IF to_regclass('tenantguard.move_marker') IS NOT NULL THEN
			DELETE FROM tenantguard.move_marker WHERE name = `+quoteLiteral(name)+`;
		END IF; END $$`); err != nil {
		return err
	}
	return dropMarkerIfUnused(ctx, conn)
}

// dropMarkerIfUnused drops the marker table when it holds no row and no
// publication (a move from this cluster) or subscription (a move to it)
// includes it. The lock makes a move that creates its publication or
// subscription meanwhile wait, and then create the table again.
func dropMarkerIfUnused(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass('"+markerTable+"') IS NOT NULL").Scan(&exists); err != nil || !exists {
			return err
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE "+markerTable+" IN ACCESS EXCLUSIVE MODE"); err != nil {
			return err
		}
		var used bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+markerTable+`)
			OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel WHERE prrelid = '`+markerTable+`'::regclass)
			OR EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel WHERE srrelid = '`+markerTable+`'::regclass)`).Scan(&used); err != nil || used {
			return err
		}
		_, err := tx.Exec(ctx, "DROP TABLE "+markerTable)
		return err
	})
}

// commitFlushed runs q in a transaction that commits with
// synchronous_commit on: q takes a transaction id, so the commit waits
// until the WAL is flushed past it.
func commitFlushed(ctx context.Context, conn *pgx.Conn, q string, args ...any) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, q, args...)
		return err
	})
}

// catchUpByMarker writes a new marker at the source (committed with a
// flush) and waits until the target has it.
func catchUpByMarker(ctx context.Context, r *workflow.Run, e *moveEnv, timeout time.Duration) error {
	seq := time.Now().UnixNano()
	// Its commit flushes the WAL up to it, every earlier commit of the
	// tenant's included, so the walsender can send them all at once.
	if err := commitFlushed(ctx, e.src, "INSERT INTO "+markerTable+" (name, seq) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq", e.name, seq); err != nil {
		return fmt.Errorf("write the move's marker at %s: %w", e.rt.From, err)
	}
	waitFrom := time.Now()
	deadline := waitFrom.Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		var got int64
		if err := e.dst.QueryRow(ctx, "SELECT coalesce((SELECT seq FROM "+markerTable+" WHERE name = $1), 0)", e.name).Scan(&got); err != nil {
			return err
		}
		if got >= seq {
			if err := r.SetResult("caught_up_marker", seq); err != nil {
				return err
			}
			return r.SetResult("catch_up_wait_ms", time.Since(waitFrom).Milliseconds())
		}
		if time.Now().After(deadline) {
			return workflow.Permanent(fmt.Errorf("cluster %s had not applied the move's marker within %s", e.rt.To, timeout))
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}
