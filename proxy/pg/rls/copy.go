package rls

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
)

// COPY FROM STDIN into row-isolated tables (see firewall.CopySchema).
//
// For every row-isolated table, bootstrap makes a stage in CopySchema: an
// unlogged table with the table's columns and none of its constraints or
// defaults, without RLS, so the upstream role may COPY into it, and
// CopyFinish, an administrator-owned function that moves the caller's
// staged rows into the table. The function runs as its caller (SECURITY
// INVOKER): the move is the upstream role's own INSERT, under row-level
// security, never an owner's or superuser's, who would bypass it. The
// proxy runs both in one simple Query, so one implicit transaction:
//
//	COPY tenantguard_copy."public.orders" (item, amount) FROM STDIN …;
//	SELECT tenantguard.copy_finish('public.orders', ARRAY['item','amount'])
//
// The move is an INSERT into the table itself: its defaults fill the
// columns the client left out (the tenant column's is the bound tenant)
// and its row-level security checks every row, so a row naming another
// tenant fails as a direct INSERT would. Staged rows are only ever visible
// to their own transaction, which either moves them or rolls back, so the
// role's SELECT and DELETE on a stage (which the move needs) show it
// nothing of anyone else's, even without the proxy; the firewall keeps
// tenants out of CopySchema anyway.

// CopyFinish is the function that moves staged rows into their table.
const CopyFinish = Schema + ".copy_finish"

// copyFinishSQL defines CopyFinish. target names a row-isolated table as
// the policy does; cols are the COPY's columns, or NULL for all.
const copyFinishSQL = `CREATE OR REPLACE FUNCTION tenantguard.copy_finish(target text, cols text[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  stage regclass;
  rel regclass;
  collist text;
  n bigint;
BEGIN
  SELECT s.stage, s.target::regclass INTO stage, rel FROM tenantguard.copy_stages s WHERE s.target = copy_finish.target;
  IF stage IS NULL THEN
    RAISE EXCEPTION 'no COPY stage for table %: run tenantguard pg bootstrap', target USING ERRCODE = '42501';
  END IF;
  IF cols IS NULL THEN
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO collist
      FROM pg_attribute WHERE attrelid = stage AND attnum > 0 AND NOT attisdropped;
  ELSE
    IF EXISTS (SELECT 1 FROM unnest(cols) c WHERE NOT EXISTS (
        SELECT 1 FROM pg_attribute WHERE attrelid = stage AND attname = c AND attnum > 0 AND NOT attisdropped)) THEN
      RAISE EXCEPTION 'column list does not match table %', target USING ERRCODE = '42703';
    END IF;
    SELECT string_agg(quote_ident(c), ', ' ORDER BY o) INTO collist FROM unnest(cols) WITH ORDINALITY AS u(c, o);
  END IF;
  EXECUTE format('WITH moved AS (DELETE FROM %s RETURNING %s) INSERT INTO %s (%s) SELECT %s FROM moved',
    stage, collist, rel, collist, collist);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$fn$`

// bootstrapCopy installs COPY stages for every row-isolated table of snap
// and the function that empties them. Called inside Bootstrap's
// transaction; role is the upstream role, quoted.
func bootstrapCopy(ctx context.Context, tx pgx.Tx, role string, snap *policy.Snapshot) error {
	steps := []string{
		"CREATE SCHEMA IF NOT EXISTS " + firewall.CopySchema,
		"REVOKE ALL ON SCHEMA " + firewall.CopySchema + " FROM PUBLIC",
		"GRANT USAGE ON SCHEMA " + firewall.CopySchema + " TO " + role,
		`CREATE TABLE IF NOT EXISTS tenantguard.copy_stages (target text PRIMARY KEY, stage regclass NOT NULL)`,
		"REVOKE ALL ON tenantguard.copy_stages FROM PUBLIC",
		"GRANT SELECT ON tenantguard.copy_stages TO " + role,
		copyFinishSQL,
		"REVOKE ALL ON FUNCTION tenantguard.copy_finish(text, text[]) FROM PUBLIC",
		"GRANT EXECUTE ON FUNCTION tenantguard.copy_finish(text, text[]) TO " + role,
	}
	for _, q := range steps {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("bootstrap %q: %w", firstLine(q), err)
		}
	}
	for _, t := range snap.Tables() {
		if t.Shared {
			continue
		}
		if err := copyStage(ctx, tx, role, t.Name); err != nil {
			return fmt.Errorf("bootstrap COPY stage for %s: %w", t.Name, err)
		}
	}
	return nil
}

// copyStage (re)creates one table's stage, following its current columns.
func copyStage(ctx context.Context, tx pgx.Tx, role, table string) error {
	stage := pgx.Identifier{firewall.CopySchema, table}.Sanitize()
	var rel string
	if err := tx.QueryRow(ctx, "SELECT $1::regclass::text", table).Scan(&rel); err != nil {
		return err
	}
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + stage,
		"CREATE UNLOGGED TABLE " + stage + " (LIKE " + rel + ")",
		"REVOKE ALL ON " + stage + " FROM PUBLIC",
		"GRANT SELECT, INSERT, DELETE ON " + stage + " TO " + role,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("%q: %w", q, err)
		}
	}
	// No constraints: what the table refuses, the move into it refuses,
	// and a COPY may leave out columns the table fills by default.
	rows, err := tx.Query(ctx, `SELECT quote_ident(attname) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attnotnull`, stage)
	if err != nil {
		return err
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, c := range cols {
		if _, err := tx.Exec(ctx, "ALTER TABLE "+stage+" ALTER COLUMN "+c+" DROP NOT NULL"); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, `INSERT INTO tenantguard.copy_stages (target, stage) VALUES ($1, $2::regclass)
		ON CONFLICT (target) DO UPDATE SET stage = EXCLUDED.stage`, table, stage)
	return err
}

// checkCopy audits COPY support: the move must run as its caller (a
// SECURITY DEFINER owned by the tables' owner or a superuser would bypass
// row-level security), and every row-isolated table should have a stage
// with its columns (else COPY into it fails until pg bootstrap runs again).
func checkCopy(ctx context.Context, conn *pgx.Conn, r *Report, snap *policy.Snapshot) error {
	var exists, definer bool
	err := conn.QueryRow(ctx, `SELECT true, p.prosecdef FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1 AND p.proname = 'copy_finish'`, Schema).Scan(&exists, &definer)
	if err != nil && err != pgx.ErrNoRows {
		return fmt.Errorf("read copy_finish: %w", err)
	}
	if !exists {
		r.warn("COPY FROM into row-isolated tables is not installed (run pg bootstrap)")
		return nil
	}
	if definer {
		r.problem("%s is SECURITY DEFINER: its move into row-isolated tables would bypass row-level security", CopyFinish)
	}
	for _, t := range snap.Tables() {
		if t.Shared {
			continue
		}
		var missing int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_attribute a
			WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
			AND NOT EXISTS (SELECT 1 FROM pg_attribute s WHERE s.attrelid = to_regclass($2) AND s.attname = a.attname
				AND s.atttypid = a.atttypid AND NOT s.attisdropped)`, t.Name, pgx.Identifier{firewall.CopySchema, t.Name}.Sanitize()).Scan(&missing)
		if err != nil {
			return fmt.Errorf("check COPY stage of %s: %w", t.Name, err)
		}
		if missing > 0 {
			r.warn("the COPY stage of %s does not match its columns (run pg bootstrap after schema changes)", t.Name)
		}
	}
	return nil
}
