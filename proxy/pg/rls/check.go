package rls

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
// binding function, and that a binding signed by b verifies in the database.
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
	if err := checkFunction(ctx, conn, r, role); err != nil {
		return nil, err
	}
	if err := checkCopy(ctx, conn, r, snap); err != nil {
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

func checkFunction(ctx context.Context, conn *pgx.Conn, r *Report, role string) error {
	var secdef, ownerIsUs bool
	err := conn.QueryRow(ctx, `SELECT p.prosecdef, pg_has_role(current_user, p.proowner, 'MEMBER')
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'tenantguard' AND p.proname = 'current_tenant' AND p.pronargs = 0`).Scan(&secdef, &ownerIsUs)
	if err == pgx.ErrNoRows {
		r.problem("function tenantguard.current_tenant() is missing: run tenantguard pg bootstrap")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read binding function: %w", err)
	}
	if !secdef {
		r.problem("tenantguard.current_tenant() is not SECURITY DEFINER")
	}
	if ownerIsUs {
		r.problem("upstream role %s owns (or is a member of the owner of) tenantguard.current_tenant(): it could replace it", role)
	}
	var schemaCreate, keyRead, keyWrite bool
	if err := conn.QueryRow(ctx, `SELECT has_schema_privilege('tenantguard', 'CREATE'),
		has_table_privilege('tenantguard.binding_key', 'SELECT'),
		has_table_privilege('tenantguard.binding_key', 'INSERT, UPDATE, DELETE')`).Scan(&schemaCreate, &keyRead, &keyWrite); err != nil {
		return fmt.Errorf("read binding key privileges: %w", err)
	}
	if schemaCreate {
		r.problem("upstream role %s may create objects in schema tenantguard", role)
	}
	if keyRead || keyWrite {
		r.problem("upstream role %s can read or change tenantguard.binding_key", role)
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
	rows, err := conn.Query(ctx, `SELECT polname, polpermissive FROM pg_policy WHERE polrelid = $1::regclass`, rel)
	if err != nil {
		return err
	}
	type pol struct {
		name       string
		permissive bool
	}
	pols, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pol, error) {
		var p pol
		return p, row.Scan(&p.name, &p.permissive)
	})
	if err != nil {
		return err
	}
	found := false
	for _, p := range pols {
		if p.name == PolicyName {
			found = true
		} else if p.permissive {
			r.problem("table %s has another permissive policy %q, which widens what tenants see", rel, p.name)
		}
	}
	if !found {
		r.problem("table %s lacks the %s policy: run tenantguard pg bootstrap", rel, PolicyName)
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

// checkBinding shows the database accepts this sidecar's signature and
// rejects a forged one.
func checkBinding(ctx context.Context, conn *pgx.Conn, r *Report, b *Binder) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	var got *string
	const probe = "tenantguard-check"
	if err := tx.QueryRow(ctx, "SELECT set_config($1, $2, true), tenantguard.current_tenant()", Setting, b.Sign(probe, time.Now())).Scan(new(string), &got); err != nil {
		return fmt.Errorf("verify binding: %w", err)
	}
	if got == nil || *got != probe {
		r.problem("the database does not accept this sidecar's binding signature: the binding key differs from the one pg bootstrap installed")
	}
	if err := tx.QueryRow(ctx, "SELECT set_config($1, $2, true), tenantguard.current_tenant()", Setting, probe+".1.00").Scan(new(string), &got); err != nil {
		return fmt.Errorf("verify forged binding: %w", err)
	}
	if got != nil {
		r.problem("the database accepts a forged binding")
	}
	return nil
}
