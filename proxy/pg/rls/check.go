package rls

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/policy"
)

// Report is the outcome of Check: Problems make the sidecar refuse to
// serve; Warnings are weaknesses worth fixing.
type Report struct {
	Problems []string
	Warnings []string
}

// OK reports whether nothing fatal was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

func (r *Report) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

// Error summarises the problems.
func (r *Report) Error() string {
	return "isolation check failed: " + strings.Join(r.Problems, "; ")
}

// Check audits the database as seen by the upstream role conn is logged in
// as: the role's attributes, every protected table and partition, the
// binding machinery in schema tenantguard, and that a binding signed by b
// is accepted by the database and a forged one is not.
func Check(ctx context.Context, conn *pgx.Conn, snap *policy.Snapshot, b *Binder) (*Report, error) {
	r := &Report{}
	var role string
	var super, bypass bool
	if err := conn.QueryRow(ctx, "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user").Scan(&role, &super, &bypass); err != nil {
		return nil, fmt.Errorf("read role: %w", err)
	}
	if super {
		r.problem("upstream role %s is a superuser: superusers bypass row-level security", role)
	}
	if bypass {
		r.problem("upstream role %s has BYPASSRLS", role)
	}
	var temp, create, schemaCreate bool
	if err := conn.QueryRow(ctx, `SELECT has_database_privilege(current_database(), 'TEMP'),
		has_database_privilege(current_database(), 'CREATE'),
		has_schema_privilege('public', 'CREATE')`).Scan(&temp, &create, &schemaCreate); err != nil {
		return nil, err
	}
	if temp {
		r.warn("upstream role %s may create temporary tables (run pg bootstrap to revoke TEMP)", role)
	}
	if create || schemaCreate {
		r.warn("upstream role %s may create objects in the database or schema public", role)
	}
	if err := checkBindingObjects(ctx, conn, r, role); err != nil {
		return nil, err
	}
	if err := checkCopy(ctx, conn, r, snap); err != nil {
		return nil, err
	}
	if err := checkCacheTriggers(ctx, conn, r, snap); err != nil {
		return nil, err
	}
	for _, t := range snap.Tables() {
		rels, err := tableAndPartitions(ctx, conn, t.Name)
		if err != nil {
			r.problem("%v", err)
			continue
		}
		for _, rel := range rels {
			if err := checkTable(ctx, conn, r, role, rel, t); err != nil {
				return nil, err
			}
		}
	}
	if r.OK() && b != nil {
		if err := checkBinding(ctx, conn, r, b); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// checkBindingObjects audits the binding machinery in schema tenantguard: that
// the upstream role can neither replace it, nor read the key, nor write the
// registry or the registers the policies trust.
func checkBindingObjects(ctx context.Context, conn *pgx.Conn, r *Report, role string) error {
	var exists, usage, schemaCreate bool
	if err := conn.QueryRow(ctx, `SELECT to_regnamespace('tenantguard') IS NOT NULL,
		coalesce(has_schema_privilege(to_regnamespace('tenantguard'), 'USAGE'), false),
		coalesce(has_schema_privilege(to_regnamespace('tenantguard'), 'CREATE'), false)`).Scan(&exists, &usage, &schemaCreate); err != nil {
		return fmt.Errorf("read schema tenantguard: %w", err)
	}
	if !exists || !usage {
		r.problem("schema tenantguard is missing, or upstream role %s may not use it: run tenantguard pg bootstrap", role)
		return nil
	}
	if schemaCreate {
		r.problem("upstream role %s may create objects in schema tenantguard", role)
	}
	if err := checkFunctions(ctx, conn, r, role); err != nil {
		return err
	}
	var keyRead, keyWrite bool
	if err := conn.QueryRow(ctx, `SELECT has_table_privilege('tenantguard.binding_key', 'SELECT'),
		has_table_privilege('tenantguard.binding_key', 'INSERT, UPDATE, DELETE, TRUNCATE')`).Scan(&keyRead, &keyWrite); err != nil {
		r.problem("table tenantguard.binding_key is missing: run tenantguard pg bootstrap")
		return nil
	}
	if keyRead || keyWrite {
		r.problem("upstream role %s can read or change tenantguard.binding_key", role)
	}
	if err := checkRegistry(ctx, conn, r, role); err != nil {
		return err
	}
	return checkRegisters(ctx, conn, r, role)
}

// checkFunctions audits bind (SECURITY DEFINER, a fixed search_path) and
// current_tenant (not SECURITY DEFINER any more: it only reads), neither
// owned by the upstream role.
func checkFunctions(ctx context.Context, conn *pgx.Conn, r *Report, role string) error {
	for _, f := range []struct {
		sig    string
		secdef bool
	}{{bindFunction, true}, {currentFunction, false}} {
		var secdef, ownerIsUs, exec, pinnedPath bool
		var lang string
		err := conn.QueryRow(ctx, `SELECT p.prosecdef, pg_has_role(current_user, p.proowner, 'MEMBER'),
				has_function_privilege(p.oid, 'EXECUTE'), l.lanname,
				coalesce(EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%'), false)
			FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
			WHERE p.oid = to_regprocedure($1)`, f.sig).Scan(&secdef, &ownerIsUs, &exec, &lang, &pinnedPath)
		if err == pgx.ErrNoRows {
			r.problem("function %s is missing: run tenantguard pg bootstrap", f.sig)
			continue
		}
		if err != nil {
			return fmt.Errorf("read function %s: %w", f.sig, err)
		}
		if ownerIsUs {
			r.problem("upstream role %s owns (or is a member of the owner of) %s: it could replace it", role, f.sig)
		}
		if !exec {
			r.problem("upstream role %s may not execute %s: run tenantguard pg bootstrap", role, f.sig)
		}
		switch {
		case f.secdef && !secdef:
			r.problem("%s is not SECURITY DEFINER: it cannot bind", f.sig)
		case f.secdef && !pinnedPath:
			r.problem("%s is SECURITY DEFINER without a fixed search_path: a caller's objects could stand in for the ones it uses", f.sig)
		case !f.secdef && secdef:
			r.warn("%s is from an older tenantguard (it verified a signature in every statement): run tenantguard pg bootstrap", f.sig)
		}
	}
	return nil
}

// checkRegistry audits tenantguard.tenant: the policies trust its names, so
// the upstream role must not write it; its own RLS shows a role only the
// tenant its session is bound to.
func checkRegistry(ctx context.Context, conn *pgx.Conn, r *Report, role string) error {
	var ownerIsUs, write, rls, policy, otherPolicy bool
	err := conn.QueryRow(ctx, `SELECT pg_has_role(current_user, c.relowner, 'MEMBER'),
			has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'),
			c.relrowsecurity,
			EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = $2),
			EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname <> $2 AND p.polpermissive)
		FROM pg_class c WHERE c.oid = to_regclass($1)`, registryTable, registryPolicy).Scan(&ownerIsUs, &write, &rls, &policy, &otherPolicy)
	if err == pgx.ErrNoRows {
		r.problem("table %s is missing: run tenantguard pg bootstrap", registryTable)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", registryTable, err)
	}
	if ownerIsUs {
		r.problem("upstream role %s owns (or is a member of the owner of) %s: it could rename a tenant", role, registryTable)
	}
	if write {
		r.problem("upstream role %s may write %s: it could rename a tenant", role, registryTable)
	}
	if !rls || !policy {
		r.problem("%s lacks row-level security or its %s policy (every tenant's name would be readable): run tenantguard pg bootstrap", registryTable, registryPolicy)
	}
	if otherPolicy {
		r.problem("%s has another permissive policy, which shows other tenants' names", registryTable)
	}
	return nil
}

// checkRegisters audits the two sequences whose currval holds a session's
// binding: only nextval and setval change it, so the upstream role must
// have neither USAGE nor UPDATE on them.
func checkRegisters(ctx context.Context, conn *pgx.Conn, r *Report, role string) error {
	for _, seq := range []string{tenantRegister, issuedRegister} {
		var ownerIsUs, write bool
		var persistence string
		err := conn.QueryRow(ctx, `SELECT pg_has_role(current_user, c.relowner, 'MEMBER'),
				has_sequence_privilege(c.oid, 'USAGE') OR has_sequence_privilege(c.oid, 'UPDATE'),
				c.relpersistence::text
			FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind = 'S'`, seq).Scan(&ownerIsUs, &write, &persistence)
		if err == pgx.ErrNoRows {
			r.problem("sequence %s is missing: run tenantguard pg bootstrap", seq)
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", seq, err)
		}
		if ownerIsUs {
			r.problem("upstream role %s owns (or is a member of the owner of) %s: it could set any tenant", role, seq)
		}
		if write {
			r.problem("upstream role %s has USAGE or UPDATE on %s: nextval or setval would let it set any tenant", role, seq)
		}
		if persistence != "u" {
			r.warn("sequence %s is not UNLOGGED: every tenant switch writes WAL", seq)
		}
	}
	return nil
}

func checkTable(ctx context.Context, conn *pgx.Conn, r *Report, role, rel string, t policy.TableSpec) error {
	var enabled, forced, owner, truncate, write bool
	err := conn.QueryRow(ctx, `SELECT c.relrowsecurity, c.relforcerowsecurity,
			pg_has_role(current_user, c.relowner, 'MEMBER'),
			has_table_privilege(c.oid, 'TRUNCATE'),
			has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE') OR has_table_privilege(c.oid, 'DELETE')
		FROM pg_class c WHERE c.oid = $1::regclass`, rel).Scan(&enabled, &forced, &owner, &truncate, &write)
	if err != nil {
		return fmt.Errorf("read table %s: %w", rel, err)
	}
	if owner {
		r.problem("upstream role %s owns, or is a member of the owner of, %s: owners bypass row-level security", role, rel)
	}
	if truncate {
		r.problem("upstream role %s may TRUNCATE %s, which bypasses row-level security", role, rel)
	}
	if t.Shared {
		if write {
			r.problem("shared table %s is writable by upstream role %s", rel, role)
		}
		return nil
	}
	if !enabled || !forced {
		r.problem("table %s lacks ENABLE and FORCE ROW LEVEL SECURITY", rel)
	}
	rows, err := conn.Query(ctx, `SELECT polname, polpermissive, coalesce(pg_get_expr(polqual, polrelid), '') FROM pg_policy WHERE polrelid = $1::regclass`, rel)
	if err != nil {
		return err
	}
	type pol struct {
		name, qual string
		permissive bool
	}
	pols, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pol, error) {
		var p pol
		return p, row.Scan(&p.name, &p.permissive, &p.qual)
	})
	if err != nil {
		return err
	}
	found := false
	for _, p := range pols {
		if p.name == PolicyName {
			found = true
			if !strings.Contains(p.qual, "tenantguard.current_tenant()") {
				r.warn("the %s policy on %s does not compare with tenantguard.current_tenant(): run tenantguard pg bootstrap", PolicyName, rel)
			}
		} else if p.permissive {
			r.problem("table %s has another permissive policy %q, which widens what tenants see", rel, p.name)
		}
	}
	if !found {
		r.problem("table %s lacks the %s policy: run tenantguard pg bootstrap", rel, PolicyName)
	}
	var def string
	if err := conn.QueryRow(ctx, `SELECT coalesce(pg_get_expr(d.adbin, d.adrelid), '') FROM pg_attribute a
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1::regclass AND a.attname = $2`, rel, t.TenantColumn).Scan(&def); err != nil {
		return fmt.Errorf("read the tenant column %s of %s: %w", t.TenantColumn, rel, err)
	}
	switch {
	case def == "":
		r.warn("tenant column %s of %s has no default: inserts must name the tenant (run tenantguard pg bootstrap)", t.TenantColumn, rel)
	case !strings.Contains(def, "tenantguard.current_tenant()"):
		r.warn("tenant column %s of %s defaults to %s, not tenantguard.current_tenant(): an insert that leaves it out fails unless it is that tenant's (pg bootstrap keeps a default it did not set: ALTER TABLE %s ALTER COLUMN %s SET DEFAULT tenantguard.current_tenant())",
			t.TenantColumn, rel, def, rel, pgx.Identifier{t.TenantColumn}.Sanitize())
	}
	// Unique indexes and foreign keys that omit the tenant column leak
	// other tenants' values through violations (and block their inserts).
	rows, err = conn.Query(ctx, `SELECT i.indexrelid::regclass::text, 'unique index' FROM pg_index i
		WHERE i.indrelid = $1::regclass AND i.indisunique AND NOT i.indisprimary
		AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attname = $2 AND a.attnum = ANY (i.indkey))
		UNION ALL
		SELECT con.conname::text, 'foreign key' FROM pg_constraint con
		WHERE con.conrelid = $1::regclass AND con.contype = 'f'
		AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = con.conrelid AND a.attname = $2 AND a.attnum = ANY (con.conkey))`, rel, t.TenantColumn)
	if err != nil {
		return err
	}
	type con struct{ name, kind string }
	cons, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (con, error) {
		var c con
		return c, row.Scan(&c.name, &c.kind)
	})
	if err != nil {
		return err
	}
	// Primary keys are left out: surrogate keys are unique by design and
	// their values carry no tenant data.
	for _, c := range cons {
		r.warn("%s %s on %s omits the tenant column %s: its violations reveal other tenants' values", c.kind, c.name, rel, t.TenantColumn)
	}
	return nil
}

// checkBinding shows the database accepts this sidecar's signature, and
// that a rejected binding leaves the session bound to no tenant. The probe
// runs in a transaction that is rolled back; the check's connection is
// closed after it.
func checkBinding(ctx context.Context, conn *pgx.Conn, r *Report, b *Binder) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	const probe = "tenantguard-check"
	pid := conn.PgConn().PID()
	sql, args := b.Statement(probe, pid, time.Now())
	if _, err := tx.Exec(ctx, sql, anys(args)...); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42501" {
			r.problem("the database does not accept this sidecar's binding (%s): the binding key differs from the one pg bootstrap installed, or the clocks differ by more than binding_max_age", pe.Message)
			return nil
		}
		return fmt.Errorf("bind: %w", err)
	}
	var got *string
	if err := tx.QueryRow(ctx, "SELECT tenantguard.current_tenant()").Scan(&got); err != nil {
		return fmt.Errorf("read the bound tenant: %w", err)
	}
	if got == nil || *got != probe {
		r.problem("a binding the database accepted does not show in tenantguard.current_tenant(): run tenantguard pg bootstrap")
	}
	if _, err := tx.Exec(ctx, "SAVEPOINT forged"); err != nil {
		return err
	}
	_, args = b.Statement(probe, pid, time.Now().Add(time.Second))
	args[3] = strings.Repeat("0", len(args[3]))
	_, err = tx.Exec(ctx, sql, anys(args)...)
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "42501" {
		r.problem("the database accepts a forged binding (%v)", err)
	}
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT forged"); err != nil {
		return err
	}
	// Rejected, the session is bound to no tenant: its statements fail.
	err = tx.QueryRow(ctx, "SELECT tenantguard.current_tenant()").Scan(&got)
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == "55000" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the bound tenant: %w", err)
	}
	if got != nil {
		r.problem("a rejected binding left the session bound to %q", *got)
	}
	return nil
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
