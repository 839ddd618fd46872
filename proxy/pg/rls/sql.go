package rls

// The objects pg bootstrap installs in schema tenantguard, owned by the
// administrator who runs it. The upstream role gets USAGE on the schema,
// SELECT on the registry (under its own RLS) and on the two register
// sequences (currval needs it), and EXECUTE on bind; every role may call
// current_tenant (tenant columns default to it). Nothing the upstream role
// could write with. bind also sets tenantguard.bound = 'on', which only
// tells current_tenant that the session was ever bound.

// Names of the installed objects, as check.go audits them.
const (
	registryTable   = "tenantguard.tenant"
	tenantRegister  = "tenantguard.tenant_binding"
	issuedRegister  = "tenantguard.binding_issued_at"
	bindFunction    = "tenantguard.bind(text, integer, bigint, text)"
	currentFunction = "tenantguard.current_tenant()"
	registryPolicy  = "tenantguard_bound_tenant"
)

// tenantIDPattern is policy's tenant id syntax, as a POSIX regular
// expression for the database.
const tenantIDPattern = `^[a-z0-9][a-z0-9_-]{0,62}$`

// registersSQL creates the two per-session registers. They are UNLOGGED:
// setval on them writes no WAL and assigns no transaction id, so a bind
// costs no fsync and leaves nothing to vacuum.
const registersSQL = `
CREATE UNLOGGED SEQUENCE IF NOT EXISTS tenantguard.tenant_binding AS bigint MINVALUE 0 START WITH 0;
ALTER SEQUENCE tenantguard.tenant_binding SET UNLOGGED;
CREATE UNLOGGED SEQUENCE IF NOT EXISTS tenantguard.binding_issued_at AS bigint MINVALUE 0 START WITH 0;
ALTER SEQUENCE tenantguard.binding_issued_at SET UNLOGGED;
REVOKE ALL ON SEQUENCE tenantguard.tenant_binding, tenantguard.binding_issued_at FROM PUBLIC`

// registrySQL creates the tenant registry: one row per tenant ever bound,
// never updated. Its RLS shows a role only the tenant its session is bound
// to.
const registrySQL = `
CREATE TABLE IF NOT EXISTS tenantguard.tenant (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name text NOT NULL UNIQUE CHECK (name ~ '` + tenantIDPattern + `'));
REVOKE ALL ON tenantguard.tenant FROM PUBLIC;
ALTER TABLE tenantguard.tenant ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS ` + registryPolicy + ` ON tenantguard.tenant;
CREATE POLICY ` + registryPolicy + ` ON tenantguard.tenant AS PERMISSIVE FOR SELECT TO PUBLIC
	USING (id = pg_catalog.currval('tenantguard.tenant_binding'::pg_catalog.regclass))`

// bindSQL defines tenantguard.bind. It unbinds first; a binding it
// rejects also drops the register's value (DISCARD SEQUENCES), so the
// session's statements fail until it is bound again, and raises 42501.
// Neither setval nor DISCARD is undone by the error's rollback. It runs
// once per tenant switch, so it keeps to one query (key and tenant number
// together) and otherwise PL/pgSQL's fast path for simple expressions.
const bindSQL = `CREATE OR REPLACE FUNCTION tenantguard.bind(tenant_id text, backend_pid integer, issued_at bigint, signature text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  k record;
  now_us bigint;
  earliest bigint;
  problem text;
  tid bigint;
  ignored bigint;
BEGIN
  -- Unbind first: whatever happens below (a rejection, an error, a
  -- cancel), this session no longer carries the tenant it had.
  ignored := setval('tenantguard.tenant_binding', 0);
  SELECT b.ipad, b.opad, b.max_age, (SELECT t.id FROM tenantguard.tenant t WHERE t.name = tenant_id) AS tid
    INTO k FROM tenantguard.binding_key b WHERE b.id = 1;
  now_us := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
  IF backend_pid IS DISTINCT FROM pg_backend_pid() THEN
    problem := format('it is for backend %s, this is backend %s', backend_pid, pg_backend_pid());
  ELSIF tenant_id IS NULL OR tenant_id !~ '` + tenantIDPattern + `' OR issued_at IS NULL OR signature IS NULL THEN
    problem := 'malformed';
  ELSIF k.ipad IS NULL THEN
    problem := 'no binding key installed (run tenantguard pg bootstrap)';
  ELSIF encode(sha256(k.opad || sha256(k.ipad || convert_to(tenant_id || '.' || backend_pid || '.' || issued_at, 'UTF8'))), 'hex') IS DISTINCT FROM signature THEN
    problem := 'the signature does not verify (is the sidecar''s binding_key the one pg bootstrap installed?)';
  ELSIF issued_at > now_us + 300000000 OR issued_at < now_us - (extract(epoch FROM k.max_age) * 1000000)::bigint THEN
    problem := format('issued %s s from the database''s clock: more than binding_max_age ago, or more than 300 s ahead', (issued_at - now_us) / 1000000);
  ELSE
    -- No replay: the binding must be newer than the last one this
    -- session accepted and, for the first, than the session itself (less
    -- 300 s of clock skew), so neither an older binding of this backend nor
    -- one issued to an earlier backend with the same pid is accepted.
    BEGIN
      earliest := currval('tenantguard.binding_issued_at');
    EXCEPTION WHEN object_not_in_prerequisite_state THEN -- the session's first
      SELECT (extract(epoch FROM a.backend_start) * 1000000)::bigint - 300000000 INTO earliest
      FROM pg_stat_get_activity(pg_backend_pid()) a;
    END;
    IF issued_at <= coalesce(earliest, 0) THEN
      problem := 'not newer than the last binding of this session, or issued before the session began (a replay)';
    END IF;
  END IF;
  IF problem IS NOT NULL THEN
    DISCARD SEQUENCES;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = 'tenantguard: binding rejected: ' || problem;
  END IF;
  tid := k.tid;
  IF tid IS NULL THEN
    INSERT INTO tenantguard.tenant (name) VALUES (tenant_id) ON CONFLICT (name) DO NOTHING RETURNING id INTO tid;
    IF tid IS NULL THEN -- inserted meanwhile by another session
      SELECT t.id INTO STRICT tid FROM tenantguard.tenant t WHERE t.name = tenant_id;
    END IF;
  END IF;
  ignored := setval('tenantguard.binding_issued_at', issued_at);
  ignored := setval('tenantguard.tenant_binding', tid);
  PERFORM set_config('tenantguard.bound', 'on', false);
END
$fn$`

// currentTenantSQL defines tenantguard.current_tenant(): the tenant the
// session is bound to. Every isolation policy calls it once per statement
// (boundTenantExpr), tenant columns default to it, and applications may
// call it (the firewall lets tenants). It is not SECURITY DEFINER (the
// caller may read its own registry row and currval) and PL/pgSQL, so its
// query is planned once per session, not in every statement; every name in
// it is schema-qualified, so no search_path can change what it refers to.
// (bench/rls measures the alternatives: the same lookup written into the
// policy is cheaper in a cached plan and dearer in one planned each time.)
const currentTenantSQL = `CREATE OR REPLACE FUNCTION tenantguard.current_tenant() RETURNS text
LANGUAGE plpgsql STABLE
AS $fn$
BEGIN
  -- A session tenantguard.bind never bound (any other role's, an
  -- administrator's inserting into a tenant table) gets NULL, not an
  -- error. The setting only says whether to look: set by hand, it makes
  -- this fail (currval is not defined) or return NULL.
  IF pg_catalog.current_setting('tenantguard.bound', true) OPERATOR(pg_catalog.=) 'on' THEN
    RETURN (SELECT t.name FROM tenantguard.tenant t
      WHERE t.id OPERATOR(pg_catalog.=) pg_catalog.currval('tenantguard.tenant_binding'::pg_catalog.regclass));
  END IF;
  RETURN NULL;
END
$fn$`

// boundTenantExpr is what every isolation policy compares the tenant
// column with: an InitPlan, one call per statement.
const boundTenantExpr = `(SELECT tenantguard.current_tenant())`
