package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// variant is one way of binding a tenant for row-level security, measured
// on its own copy of the accounts table (t_<name>) so every variant can run
// in the same round without DDL in between.
type variant struct {
	name string
	what string // one line for the report
	// forgeable says a statement that gets past the firewall can become
	// another tenant under this variant (set a variable, SET ROLE, …).
	forgeable bool
	// setup runs once as the superuser, after the table exists; %[1]s is
	// the table, %[2]s the role the clients log in as.
	setup string
	// bind returns the per-connection statement run before the first
	// transaction; nil for none.
	bind func(tenant string) string
	// install runs after setup, as the superuser, for what needs
	// parameters (keys); nil for nothing.
	install func(ctx context.Context, admin *pgx.Conn) error
	// login overrides the role pgbench logs in as.
	login string
	// rls is false for the baseline without row-level security.
	rls bool
}

// variants are the candidates, in report order. The first two are the
// references every ratio is taken against.
var variants = []variant{
	{
		name: "none",
		what: "no row-level security (the floor)",
	},
	{
		name: "guc", rls: true, forgeable: true,
		what:  "policy tenant_id = current_setting('bench.tenant'): a plain variable, forgeable with set_config",
		setup: `CREATE POLICY p ON %[1]s USING (tenant_id = current_setting('bench.tenant', true))`,
		bind:  sqlf(`SELECT set_config('bench.tenant', '%s', false);`),
	},
	{
		name: "hmac-per-statement", rls: true,
		what: "tenantguard before issue #10: a signed binding in a variable, verified by a PL/pgSQL SECURITY DEFINER function in every statement",
		setup: oldFunctionSQL + `;
			GRANT EXECUTE ON FUNCTION bench_old.current_tenant() TO %[2]s;
			CREATE POLICY p ON %[1]s USING (tenant_id = (SELECT bench_old.current_tenant()))`,
		bind: func(tenant string) string {
			return fmt.Sprintf(`SELECT set_config('bench_old.binding', '%s', false);`, oldBinding(tenant, time.Now()))
		},
		install: func(ctx context.Context, admin *pgx.Conn) error {
			ipad, opad := oldPads()
			_, err := admin.Exec(ctx, `INSERT INTO bench_old.binding_key VALUES (1, $1, $2, '1 hour')
				ON CONFLICT (id) DO UPDATE SET ipad = EXCLUDED.ipad, opad = EXCLUDED.opad`, ipad, opad)
			return err
		},
	},
	{
		name: "backend-row", rls: true,
		what: "verified tenant in an UNLOGGED row per backend pid, tied to the session by a sequence's currval (an epoch); one UPDATE per switch",
		setup: `CREATE SCHEMA IF NOT EXISTS bench_row;
			CREATE UNLOGGED SEQUENCE IF NOT EXISTS bench_row.epoch;
			CREATE UNLOGGED TABLE IF NOT EXISTS bench_row.backend (pid int PRIMARY KEY, epoch bigint NOT NULL, tenant text NOT NULL) WITH (fillfactor = 50);
			ALTER TABLE bench_row.backend ENABLE ROW LEVEL SECURITY;
			DROP POLICY IF EXISTS own ON bench_row.backend;
			CREATE POLICY own ON bench_row.backend USING (pid = pg_backend_pid());
			GRANT USAGE ON SCHEMA bench_row TO %[2]s;
			GRANT SELECT ON bench_row.backend, bench_row.epoch TO %[2]s;
			CREATE OR REPLACE FUNCTION bench_row.bind(t text) RETURNS bool LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
			DECLARE e bigint := nextval('bench_row.epoch'); BEGIN
				INSERT INTO bench_row.backend VALUES (pg_backend_pid(), e, t)
				ON CONFLICT (pid) DO UPDATE SET epoch = EXCLUDED.epoch, tenant = EXCLUDED.tenant;
				RETURN true; END $$;
			GRANT EXECUTE ON FUNCTION bench_row.bind(text) TO %[2]s;
			CREATE POLICY p ON %[1]s USING (tenant_id = (SELECT b.tenant FROM bench_row.backend b
				WHERE b.pid = pg_backend_pid() AND b.epoch = currval('bench_row.epoch')))`,
		bind: sqlf(`SELECT bench_row.bind('%s');`),
	},
	{
		name: "registry", rls: true,
		what: "verified tenant's number in a sequence's currval (setval by the bind function), looked up in a static tenants table per statement; no write per switch",
		setup: `CREATE SCHEMA IF NOT EXISTS bench_reg;
			CREATE UNLOGGED SEQUENCE IF NOT EXISTS bench_reg.bound MINVALUE 0 START 0;
			CREATE TABLE IF NOT EXISTS bench_reg.tenant (id bigint PRIMARY KEY, name text NOT NULL UNIQUE);
			INSERT INTO bench_reg.tenant VALUES (1, 'acme'), (2, 'globex') ON CONFLICT DO NOTHING;
			GRANT USAGE ON SCHEMA bench_reg TO %[2]s;
			GRANT SELECT ON bench_reg.bound, bench_reg.tenant TO %[2]s;
			CREATE OR REPLACE FUNCTION bench_reg.bind(t text) RETURNS bool LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
			AS $$ SELECT setval('bench_reg.bound', (SELECT id FROM bench_reg.tenant WHERE name = t)) IS NOT NULL $$;
			GRANT EXECUTE ON FUNCTION bench_reg.bind(text) TO %[2]s;
			CREATE POLICY p ON %[1]s USING (tenant_id = (SELECT n.name FROM bench_reg.tenant n WHERE n.id = (SELECT currval('bench_reg.bound'))))`,
		bind: sqlf(`SELECT bench_reg.bind('%s');`),
	},
	{
		name: "registry-plpgsql", rls: true,
		what: "as registry, but the policy calls a PL/pgSQL function (not SECURITY DEFINER) doing the lookup with a plan cached for the session, so the statement's own plan has no extra table",
		setup: `CREATE SCHEMA IF NOT EXISTS bench_reg;
			CREATE UNLOGGED SEQUENCE IF NOT EXISTS bench_reg.bound MINVALUE 0 START 0;
			CREATE TABLE IF NOT EXISTS bench_reg.tenant (id bigint PRIMARY KEY, name text NOT NULL UNIQUE);
			INSERT INTO bench_reg.tenant VALUES (1, 'acme'), (2, 'globex') ON CONFLICT DO NOTHING;
			GRANT USAGE ON SCHEMA bench_reg TO %[2]s;
			GRANT SELECT ON bench_reg.bound, bench_reg.tenant TO %[2]s;
			CREATE OR REPLACE FUNCTION bench_reg.bind(t text) RETURNS bool LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
			AS $$ SELECT setval('bench_reg.bound', (SELECT id FROM bench_reg.tenant WHERE name = t)) IS NOT NULL $$;
			GRANT EXECUTE ON FUNCTION bench_reg.bind(text) TO %[2]s;
			CREATE OR REPLACE FUNCTION bench_reg.current_tenant() RETURNS text LANGUAGE plpgsql STABLE AS $fn$
			BEGIN
				RETURN (SELECT n.name FROM bench_reg.tenant n WHERE n.id OPERATOR(pg_catalog.=) pg_catalog.currval('bench_reg.bound'::pg_catalog.regclass));
			END $fn$;
			GRANT EXECUTE ON FUNCTION bench_reg.current_tenant() TO %[2]s;
			CREATE POLICY p ON %[1]s USING (tenant_id = (SELECT bench_reg.current_tenant()))`,
		bind: sqlf(`SELECT bench_reg.bind('%s');`),
	},
	{
		name: "registry-stable-id", rls: true,
		what: "as registry, but the tenant number comes from a STABLE PL/pgSQL wrapper of currval, so it is an index condition without a nested InitPlan",
		setup: `CREATE SCHEMA IF NOT EXISTS bench_reg;
			CREATE UNLOGGED SEQUENCE IF NOT EXISTS bench_reg.bound MINVALUE 0 START 0;
			CREATE TABLE IF NOT EXISTS bench_reg.tenant (id bigint PRIMARY KEY, name text NOT NULL UNIQUE);
			INSERT INTO bench_reg.tenant VALUES (1, 'acme'), (2, 'globex') ON CONFLICT DO NOTHING;
			GRANT USAGE ON SCHEMA bench_reg TO %[2]s;
			GRANT SELECT ON bench_reg.bound, bench_reg.tenant TO %[2]s;
			CREATE OR REPLACE FUNCTION bench_reg.bind(t text) RETURNS bool LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
			AS $$ SELECT setval('bench_reg.bound', (SELECT id FROM bench_reg.tenant WHERE name = t)) IS NOT NULL $$;
			GRANT EXECUTE ON FUNCTION bench_reg.bind(text) TO %[2]s;
			CREATE OR REPLACE FUNCTION bench_reg.bound_id() RETURNS bigint LANGUAGE plpgsql STABLE AS $fn$
			BEGIN
				RETURN pg_catalog.currval('bench_reg.bound'::pg_catalog.regclass);
			END $fn$;
			GRANT EXECUTE ON FUNCTION bench_reg.bound_id() TO %[2]s;
			CREATE POLICY p ON %[1]s USING (tenant_id = (SELECT n.name FROM bench_reg.tenant n WHERE n.id = bench_reg.bound_id()))`,
		bind: sqlf(`SELECT bench_reg.bind('%s');`),
	},
	{
		name: "fingerprint", rls: true,
		what: "tenant name in a variable, checked per statement against a 64-bit SHA-256 fingerprint (with a per-bind seed) held in two sequences' currval",
		setup: `CREATE SCHEMA IF NOT EXISTS bench_fp;
			CREATE UNLOGGED SEQUENCE IF NOT EXISTS bench_fp.seed MINVALUE -9223372036854775808;
			CREATE UNLOGGED SEQUENCE IF NOT EXISTS bench_fp.tag MINVALUE -9223372036854775808;
			GRANT USAGE ON SCHEMA bench_fp TO %[2]s;
			GRANT SELECT ON bench_fp.seed, bench_fp.tag TO %[2]s;
			CREATE OR REPLACE FUNCTION bench_fp.bind(t text) RETURNS bool LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
			DECLARE s bigint := ('x' || encode(substring(uuid_send(gen_random_uuid()) for 8), 'hex'))::bit(64)::bigint; BEGIN
				PERFORM setval('bench_fp.seed', s);
				PERFORM set_config('bench_fp.tenant', t, false);
				PERFORM setval('bench_fp.tag', ('x' || encode(substring(sha256(int8send(s) || convert_to(t, 'UTF8')) for 8), 'hex'))::bit(64)::bigint);
				RETURN true; END $$;
			GRANT EXECUTE ON FUNCTION bench_fp.bind(text) TO %[2]s;
			CREATE OR REPLACE FUNCTION bench_fp.current_tenant() RETURNS text LANGUAGE sql VOLATILE
			RETURN CASE WHEN pg_catalog.substring(pg_catalog.sha256(pg_catalog.int8send(pg_catalog.currval('bench_fp.seed'::pg_catalog.regclass))
				OPERATOR(pg_catalog.||) pg_catalog.convert_to(pg_catalog.current_setting('bench_fp.tenant', true), 'UTF8')), 1, 8)
				OPERATOR(pg_catalog.=) pg_catalog.int8send(pg_catalog.currval('bench_fp.tag'::pg_catalog.regclass))
				THEN pg_catalog.current_setting('bench_fp.tenant', true) END;
			GRANT EXECUTE ON FUNCTION bench_fp.current_tenant() TO %[2]s;
			CREATE POLICY p ON %[1]s USING (tenant_id = (SELECT bench_fp.current_tenant()))`,
		bind: sqlf(`SELECT bench_fp.bind('%s');`),
	},
	{
		name: "role", rls: true, forgeable: true,
		what:  "one role per tenant, policy tenant_id = current_user: forgeable by SET ROLE when the login role is a member of every tenant role",
		setup: `CREATE POLICY p ON %[1]s USING (tenant_id = (SELECT current_user::text))`,
		login: tenantID, // a role named like the tenant; see startPostgres
	},
	installedVariant,
}

// oldFunctionSQL is tenantguard.current_tenant() as it was before issue
// #10 (proxy/pg/rls/bootstrap.go at that time), in schema bench_old, with
// its key table: the baseline the issue measured.
const oldFunctionSQL = `CREATE SCHEMA IF NOT EXISTS bench_old;
GRANT USAGE ON SCHEMA bench_old TO %[2]s;
CREATE TABLE IF NOT EXISTS bench_old.binding_key (id int PRIMARY KEY CHECK (id = 1), ipad bytea NOT NULL, opad bytea NOT NULL, max_age interval NOT NULL);
CREATE OR REPLACE FUNCTION bench_old.current_tenant() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  b text := current_setting('bench_old.binding', true);
  parts text[];
  k record;
BEGIN
  IF b IS NULL OR b = '' THEN
    RETURN NULL;
  END IF;
  parts := string_to_array(b, '.');
  IF array_length(parts, 1) <> 3 OR parts[1] !~ '^[a-z0-9][a-z0-9_-]{0,62}$' OR parts[2] !~ '^[0-9]{1,12}$' THEN
    RETURN NULL;
  END IF;
  SELECT ipad, opad, max_age INTO k FROM bench_old.binding_key WHERE id = 1;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF encode(sha256(k.opad || sha256(k.ipad || convert_to(parts[1] || '.' || parts[2], 'UTF8'))), 'hex') <> parts[3] THEN
    RETURN NULL;
  END IF;
  IF to_timestamp(parts[2]::bigint) < now() - k.max_age OR to_timestamp(parts[2]::bigint) > now() + interval '5 minutes' THEN
    RETURN NULL;
  END IF;
  RETURN parts[1];
END
$fn$`

// table is the variant's copy of the accounts table.
func (v variant) table() string { return "t_" + strings.ReplaceAll(v.name, "-", "_") }

// setupSQL is v.setup with the table and role filled in.
func (v variant) setupSQL() string { return fmt.Sprintf(v.setup, v.table(), appRole) }

// sqlf returns a bind function that puts the tenant into format.
func sqlf(format string) func(string) string {
	return func(tenant string) string { return fmt.Sprintf(format, tenant) }
}

// oldBinding signs a binding the way tenantguard did before issue #10:
// "<tenant>.<unix>.<hex HMAC-SHA256>" with bindingKey.
func oldBinding(tenant string, now time.Time) string {
	msg := tenant + "." + strconv.FormatInt(now.Unix(), 10)
	m := hmac.New(sha256.New, []byte(bindingKey))
	m.Write([]byte(msg))
	return msg + "." + hex.EncodeToString(m.Sum(nil))
}

// oldPads returns the HMAC inner and outer padded keys for bench_old.binding_key.
func oldPads() (ipad, opad []byte) {
	k := make([]byte, sha256.BlockSize)
	copy(k, bindingKey)
	ipad, opad = make([]byte, len(k)), make([]byte, len(k))
	for i, c := range k {
		ipad[i], opad[i] = c^0x36, c^0x5c
	}
	return ipad, opad
}
