package rls

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
)

// Invalidation of the sidecars' result caches (proxy/pg, resultcache*.go).
//
// When the policy has cache rules, pg bootstrap installs, on every
// protected table, every table the pg_cache rules name, and each of their
// partitions, a statement-level trigger that fires after INSERT, UPDATE, DELETE and TRUNCATE and sends
// one notification on CacheChannel: the table's policy name and the tenant
// the writing session is bound to ("" for an unbound session, an
// administrator's, and for a write made by another trigger or a foreign
// key's cascade, which row-level security does not confine to the
// tenant: every tenant's results go). Notifications are
// transactional: they are delivered at commit, and not at all on
// rollback; PostgreSQL folds identical ones of one transaction into one.
// Each sidecar's cache listens on CacheChannel and caches only results of
// tables that carry the trigger.

// CacheChannel is the channel the invalidation triggers notify. Tenants
// cannot send on it: their channels are namespaced ("tg.<tenant>.…").
const CacheChannel = "tenantguard_cache"

// CacheTrigger names the invalidation trigger on each table.
const CacheTrigger = "tenantguard_cache_invalidate"

// cacheInvalidateFunction is the trigger function.
const cacheInvalidateFunction = "tenantguard.cache_invalidate()"

// cacheInvalidateSQL defines the trigger function. It is not SECURITY
// DEFINER: it runs as the writer, who may call current_tenant (every role
// may) and pg_notify. TG_ARGV[0] is the table's name in the policy (a
// partition's trigger names its root).
const cacheInvalidateSQL = `CREATE OR REPLACE FUNCTION tenantguard.cache_invalidate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  PERFORM pg_catalog.pg_notify('` + CacheChannel + `', TG_ARGV[0] OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||)
    CASE WHEN pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.>) 1 THEN '' ELSE coalesce(tenantguard.current_tenant(), '') END);
  RETURN NULL;
END
$fn$`

// CacheTables lists the tables that get invalidation triggers when the
// policy has cache rules: the protected ones and those the pg_cache rules
// name, sorted.
func CacheTables(snap *policy.Snapshot) []string {
	set := map[string]bool{}
	for _, t := range snap.Tables() {
		set[t.Name] = true
	}
	for _, t := range snap.PgCache().Tables() {
		set[t] = true
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// bootstrapCacheTriggers installs the trigger function and a trigger on
// each table of CacheTables and its partitions. Without cache rules it
// installs none, and drops those of an earlier bootstrap from the
// protected tables: every notification costs its commit a turn on
// PostgreSQL's notification queue lock, which nobody should pay for a
// cache that is off.
func bootstrapCacheTriggers(ctx context.Context, tx pgx.Tx, snap *policy.Snapshot) error {
	if !snap.PgCache().Enabled() {
		for _, t := range snap.Tables() {
			rels, err := tableAndPartitions(ctx, tx, t.Name)
			if err != nil {
				return err
			}
			for _, rel := range rels {
				q := "DROP TRIGGER IF EXISTS " + CacheTrigger + " ON " + rel
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("bootstrap %q: %w", q, err)
				}
			}
		}
		return nil
	}
	if _, err := tx.Exec(ctx, cacheInvalidateSQL); err != nil {
		return fmt.Errorf("bootstrap %s: %w", cacheInvalidateFunction, err)
	}
	for _, name := range CacheTables(snap) {
		rels, err := tableAndPartitions(ctx, tx, name)
		if err != nil {
			return err
		}
		for _, rel := range rels {
			for _, q := range []string{
				"DROP TRIGGER IF EXISTS " + CacheTrigger + " ON " + rel,
				"CREATE TRIGGER " + CacheTrigger + " AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON " + rel +
					" FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.cache_invalidate(" + quoteLiteral(name) + ")",
			} {
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("bootstrap %q: %w", q, err)
				}
			}
		}
	}
	return nil
}

// CacheCatalogSQL is what a sidecar's cache listener reads on connecting,
// as the upstream role: for every relation carrying the invalidation
// trigger, its name (schema.table, as the catalog spells it), the policy
// name its trigger notifies (a partition's root), whether it has other
// user triggers or rules (a write to it may change other tables), the
// tables whose foreign keys cascade from it, and other relations of the
// same name in other schemas (an unqualified name may resolve to them);
// and the database's default transaction isolation.
const CacheCatalogSQL = `
SELECT n.nspname || '.' || c.relname,
  pg_catalog.convert_from(substring(t.tgargs FROM 1 FOR position('\x00'::bytea IN t.tgargs) - 1), 'UTF8'),
  EXISTS (SELECT 1 FROM pg_catalog.pg_trigger o WHERE o.tgrelid = c.oid AND NOT o.tgisinternal AND o.tgname <> '` + CacheTrigger + `')
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'),
  ARRAY(SELECT cn.nspname || '.' || cc.relname FROM pg_catalog.pg_constraint k
    JOIN pg_catalog.pg_class cc ON cc.oid = k.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace
    WHERE k.contype = 'f' AND k.confrelid = c.oid AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))),
  ARRAY(SELECT on2.nspname FROM pg_catalog.pg_class o2 JOIN pg_catalog.pg_namespace on2 ON on2.oid = o2.relnamespace
    WHERE o2.relname = c.relname AND o2.oid <> c.oid AND o2.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND on2.nspname NOT LIKE 'pg\_temp\_%' AND on2.nspname NOT LIKE 'pg\_toast%')
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgname = '` + CacheTrigger + `' AND t.tgnargs = 1 AND t.tgenabled <> 'D'`

// checkCacheTriggers warns about tables the pg_cache rules name that lack
// the invalidation trigger: their results are not cached.
func checkCacheTriggers(ctx context.Context, conn *pgx.Conn, r *Report, snap *policy.Snapshot) error {
	if !snap.PgCache().Enabled() {
		return nil
	}
	rows, err := conn.Query(ctx, `SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_trigger t
		JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgname = $1 AND t.tgenabled <> 'D'`, CacheTrigger)
	if err != nil {
		return err
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	var missing []string
	for _, t := range CacheTables(snap) {
		if !set[t] {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		r.warn("tables without the result cache's invalidation trigger (run pg bootstrap; their results are not cached): %s", strings.Join(missing, ", "))
	}
	return nil
}

// quoteLiteral quotes s as an SQL string literal; the policy's table names
// are plain identifiers, but quote anyway.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
