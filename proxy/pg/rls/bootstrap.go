package rls

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
)

// PolicyName names the isolation policy bootstrap installs on every table.
const PolicyName = "tenantguard_isolation"

// Bootstrap installs isolation for every table of snap, as the table owner
// (an administrator), for the upstream role. It runs in one transaction
// and is idempotent.
func Bootstrap(ctx context.Context, admin *pgx.Conn, role string, snap *policy.Snapshot, b *Binder) error {
	tx, err := admin.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	r := pgx.Identifier{role}.Sanitize()
	ipad, opad := b.pads()
	steps := []struct {
		sql  string
		args []any
	}{
		{"CREATE SCHEMA IF NOT EXISTS tenantguard", nil},
		{"REVOKE ALL ON SCHEMA tenantguard FROM PUBLIC", nil},
		{"GRANT USAGE ON SCHEMA tenantguard TO " + r, nil},
		{`CREATE TABLE IF NOT EXISTS tenantguard.binding_key (
			id int PRIMARY KEY CHECK (id = 1),
			ipad bytea NOT NULL,
			opad bytea NOT NULL,
			max_age interval NOT NULL)`, nil},
		{"REVOKE ALL ON tenantguard.binding_key FROM PUBLIC", nil},
		{`INSERT INTO tenantguard.binding_key (id, ipad, opad, max_age) VALUES (1, $1, $2, make_interval(secs => $3))
		  ON CONFLICT (id) DO UPDATE SET ipad = EXCLUDED.ipad, opad = EXCLUDED.opad, max_age = EXCLUDED.max_age`,
			[]any{ipad, opad, b.maxAge.Seconds()}},
		{registersSQL, nil},
		{"GRANT SELECT ON SEQUENCE " + tenantRegister + ", " + issuedRegister + " TO " + r, nil},
		{registrySQL, nil},
		{"GRANT SELECT ON " + registryTable + " TO " + r, nil},
		// Registered now, a tenant's first bind does not insert (and so
		// does not wait for a commit's WAL flush).
		{"INSERT INTO tenantguard.tenant (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING", []any{snap.TenantIDs()}},
		{bindSQL, nil},
		{"REVOKE ALL ON FUNCTION " + bindFunction + " FROM PUBLIC", nil},
		{"GRANT EXECUTE ON FUNCTION " + bindFunction + " TO " + r, nil},
		// Installed by older versions: a PL/pgSQL SECURITY DEFINER function
		// that verified a signed setting in every statement. Replaced in
		// place (the policies below no longer call it).
		{currentTenantSQL, nil},
		// Every role may call it: tenant columns default to it, for
		// administrators' inserts too (they get NULL, never bound).
		{"GRANT EXECUTE ON FUNCTION " + currentFunction + " TO PUBLIC", nil},
	}
	for _, st := range steps {
		if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("bootstrap %q: %w", firstLine(st.sql), err)
		}
	}
	for _, t := range snap.Tables() {
		rels, err := tableAndPartitions(ctx, tx, t.Name)
		if err != nil {
			return err
		}
		for _, rel := range rels {
			if err := protect(ctx, tx, rel, t, r); err != nil {
				return fmt.Errorf("bootstrap %s: %w", rel, err)
			}
		}
	}
	if err := bootstrapCopy(ctx, tx, r, snap); err != nil {
		return err
	}
	if err := bootstrapCacheTriggers(ctx, tx, snap); err != nil {
		return err
	}
	var db string
	if err := tx.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return err
	}
	d := pgx.Identifier{db}.Sanitize()
	for _, q := range []string{
		"REVOKE TEMPORARY, CREATE ON DATABASE " + d + " FROM PUBLIC, " + r,
		"REVOKE CREATE ON SCHEMA public FROM PUBLIC, " + r,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("bootstrap %q: %w", q, err)
		}
	}
	return tx.Commit(ctx)
}

// protect installs RLS and grants on one relation.
func protect(ctx context.Context, tx pgx.Tx, rel string, t policy.TableSpec, role string) error {
	var stmts []string
	if t.Shared {
		stmts = []string{
			"REVOKE ALL ON " + rel + " FROM " + role,
			"GRANT SELECT ON " + rel + " TO " + role,
		}
	} else {
		col := pgx.Identifier{t.TenantColumn}.Sanitize()
		cond := col + " = " + boundTenantExpr
		stmts = []string{
			"ALTER TABLE " + rel + " ENABLE ROW LEVEL SECURITY",
			"ALTER TABLE " + rel + " FORCE ROW LEVEL SECURITY",
			"DROP POLICY IF EXISTS " + PolicyName + " ON " + rel,
			"CREATE POLICY " + PolicyName + " ON " + rel + " AS PERMISSIVE FOR ALL TO PUBLIC USING (" + cond + ") WITH CHECK (" + cond + ")",
			"REVOKE ALL ON " + rel + " FROM " + role,
			"GRANT SELECT, INSERT, UPDATE, DELETE ON " + rel + " TO " + role,
		}
		// An INSERT that leaves the tenant column out stores the bound
		// tenant (one naming another tenant fails WITH CHECK). A default
		// the administrator set is kept, since other roles' inserts may
		// rely on it; pg check warns about it.
		var otherDefault bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attrdef d
			JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
			WHERE d.adrelid = $1::regclass AND a.attname = $2
			AND pg_get_expr(d.adbin, d.adrelid) NOT LIKE '%tenantguard.current_tenant()%')`, rel, t.TenantColumn).Scan(&otherDefault); err != nil {
			return err
		}
		if !otherDefault {
			stmts = append(stmts, "ALTER TABLE "+rel+" ALTER COLUMN "+col+" SET DEFAULT tenantguard.current_tenant()")
		}
		rows, err := tx.Query(ctx, `SELECT DISTINCT s.oid::regclass::text FROM pg_depend d
			JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
			WHERE d.refobjid = $1::regclass AND d.deptype IN ('a', 'i')`, rel)
		if err != nil {
			return err
		}
		seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, s := range seqs {
			stmts = append(stmts, "GRANT USAGE ON SEQUENCE "+s+" TO "+role)
		}
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("%q: %w", q, err)
		}
	}
	return nil
}

// tableAndPartitions returns the table and, recursively, its partitions and
// inheritance children, as quoted regclass text.
func tableAndPartitions(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, name string) ([]string, error) {
	rows, err := q.Query(ctx, `WITH RECURSIVE tree(oid) AS (
			SELECT to_regclass($1)::oid
			UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid)
		SELECT oid::regclass::text FROM tree WHERE oid IS NOT NULL`, name)
	if err != nil {
		return nil, err
	}
	rels, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list %s and its partitions: %w", name, err)
	}
	if len(rels) == 0 {
		return nil, fmt.Errorf("table %s does not exist", name)
	}
	return rels, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
