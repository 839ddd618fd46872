package pg_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// TestDefaultTenantColumn: an INSERT that leaves the tenant column out
// stores the bound tenant; one that names another tenant fails the
// policy's WITH CHECK.
func TestDefaultTenantColumn(t *testing.T) {
	pg := isolatedUpstream(t)
	p := startIsolated(t, nil)
	ctx := ctxT(t, 30*time.Second)
	before, err := globexState(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, pg.AdminURL("iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, m := range execModes {
		t.Run(m.name, func(t *testing.T) {
			cfg, err := pgx.ParseConfig(p.acmeURL())
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = m.mode
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			item := "default-" + m.name
			defer func() {
				admin.Exec(context.Background(), "DELETE FROM orders WHERE item = $1", item)
				admin.Exec(context.Background(), "DELETE FROM events WHERE what = $1", item)
			}()
			if _, err := c.Exec(ctx, "INSERT INTO orders (item) VALUES ($1)", item); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, "INSERT INTO events (at, what) VALUES ('2026-06-01', $1)", item); err != nil {
				t.Fatal(err)
			}
			var owner, evOwner string
			if err := admin.QueryRow(ctx, "SELECT (SELECT tenant_id FROM orders WHERE item = $1), (SELECT tenant_id FROM events WHERE what = $1)", item).Scan(&owner, &evOwner); err != nil {
				t.Fatal(err)
			}
			if owner != "acme" || evOwner != "acme" {
				t.Fatalf("stored tenant %q (orders), %q (events), want acme", owner, evOwner)
			}
			_, err = c.Exec(ctx, "INSERT INTO orders (tenant_id, item) VALUES ('globex', $1)", item+"-planted")
			pe := assertSQLState(t, err, "42501")
			if !strings.Contains(pe.Message, "row-level security") {
				t.Fatalf("refused by %q, want the row-level security policy", pe.Message)
			}
		})
	}
	if after, err := globexState(ctx, pg); err != nil || after != before {
		t.Fatalf("globex's rows changed: %q -> %q (%v)", before, after, err)
	}
	// Another role's session, never bound, gets NULL from the default: the
	// NOT NULL violation it got before bootstrap, not a permission error.
	_, err = admin.Exec(ctx, "INSERT INTO orders (item) VALUES ('by the administrator')")
	assertSQLState(t, err, "23502")
	// A default the administrator set is kept, with a warning.
	if err := pg.Exec(ctx, "iso", "ALTER TABLE orders ALTER COLUMN tenant_id SET DEFAULT 'acme'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pg.Exec(context.Background(), "iso", "ALTER TABLE orders ALTER COLUMN tenant_id SET DEFAULT tenantguard.current_tenant()")
	})
	if err := rls.Bootstrap(ctx, admin, isoRole, isoPolicy(t), isoBinder); err != nil {
		t.Fatal(err)
	}
	var def string
	if err := admin.QueryRow(ctx, "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'orders'::regclass AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'tenant_id')").Scan(&def); err != nil {
		t.Fatal(err)
	}
	if def != "'acme'::text" {
		t.Fatalf("bootstrap replaced the administrator's default with %s", def)
	}
	w, err := p.srv.CheckIsolation(ctx)
	if err != nil || !strings.Contains(strings.Join(w, "\n"), "tenant column tenant_id of orders defaults to 'acme'::text") {
		t.Fatalf("check: %v, warnings %q", err, w)
	}
}

// TestCheckAuditsBindingObjects: the start-up check fails closed when the
// upstream role could write what the policies trust, or when the binding
// function lost what makes it safe; each case is undone afterwards.
func TestCheckAuditsBindingObjects(t *testing.T) {
	pg := isolatedUpstream(t)
	p := startIsolated(t, nil)
	ctx := ctxT(t, 60*time.Second)
	const bind = "tenantguard.bind(text, integer, bigint, text)"
	for _, tc := range []struct {
		name, breakSQL, undoSQL, want string
	}{
		{"setval on the register", "GRANT UPDATE ON SEQUENCE tenantguard.tenant_binding TO " + isoRole,
			"REVOKE UPDATE ON SEQUENCE tenantguard.tenant_binding FROM " + isoRole, "USAGE or UPDATE on tenantguard.tenant_binding"},
		{"nextval on the issue time", "GRANT USAGE ON SEQUENCE tenantguard.binding_issued_at TO " + isoRole,
			"REVOKE USAGE ON SEQUENCE tenantguard.binding_issued_at FROM " + isoRole, "USAGE or UPDATE on tenantguard.binding_issued_at"},
		{"register owned by the role", "ALTER SEQUENCE tenantguard.tenant_binding OWNER TO " + isoRole,
			"ALTER SEQUENCE tenantguard.tenant_binding OWNER TO postgres", "owns (or is a member of the owner of) tenantguard.tenant_binding"},
		{"registry writable", "GRANT UPDATE ON tenantguard.tenant TO " + isoRole,
			"REVOKE UPDATE ON tenantguard.tenant FROM " + isoRole, "may write tenantguard.tenant"},
		{"registry without RLS", "ALTER TABLE tenantguard.tenant DISABLE ROW LEVEL SECURITY",
			"ALTER TABLE tenantguard.tenant ENABLE ROW LEVEL SECURITY", "tenantguard.tenant lacks row-level security"},
		{"registry with an open policy", "CREATE POLICY open ON tenantguard.tenant USING (true)",
			"DROP POLICY open ON tenantguard.tenant", "another permissive policy"},
		{"bind not SECURITY DEFINER", "ALTER FUNCTION " + bind + " SECURITY INVOKER",
			"ALTER FUNCTION " + bind + " SECURITY DEFINER", "is not SECURITY DEFINER"},
		{"bind without search_path", "ALTER FUNCTION " + bind + " RESET search_path",
			"ALTER FUNCTION " + bind + " SET search_path = pg_catalog, pg_temp", "without a fixed search_path"},
		{"bind owned by the role", "ALTER FUNCTION " + bind + " OWNER TO " + isoRole,
			"ALTER FUNCTION " + bind + " OWNER TO postgres", "owns (or is a member of the owner of) " + bind},
		{"key readable", "GRANT SELECT ON tenantguard.binding_key TO " + isoRole,
			"REVOKE SELECT ON tenantguard.binding_key FROM " + isoRole, "can read or change tenantguard.binding_key"},
		{"another key", "UPDATE tenantguard.binding_key SET ipad = sha256(ipad) || sha256(opad)",
			"", "does not accept this sidecar's binding"},
		{"bind missing", "ALTER FUNCTION " + bind + " RENAME TO bind_moved",
			"ALTER FUNCTION tenantguard.bind_moved(text, integer, bigint, text) RENAME TO bind", "function " + bind + " is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.srv.CheckIsolation(ctx); err != nil {
				t.Fatalf("before: %v", err)
			}
			if err := pg.Exec(ctx, "iso", tc.breakSQL); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if tc.undoSQL != "" {
					if err := pg.Exec(context.Background(), "iso", tc.undoSQL); err != nil {
						t.Fatal(err)
					}
				}
				// Bootstrap puts back the key and the grants an owner change dropped.
				c, err := pgx.Connect(context.Background(), pg.AdminURL("iso"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(context.Background())
				if err := rls.Bootstrap(context.Background(), c, isoRole, isoPolicy(t), isoBinder); err != nil {
					t.Fatal(err)
				}
			})
			_, err := p.srv.CheckIsolation(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check after %q: %v, want a problem containing %q", tc.breakSQL, err, tc.want)
			}
		})
	}
	if _, err := p.srv.CheckIsolation(ctx); err != nil {
		t.Fatalf("after: %v", err)
	}
}

// oldInstallSQL is what pg bootstrap installed before issue #10: a
// PL/pgSQL SECURITY DEFINER current_tenant() verifying a signed setting,
// called by every policy.
const oldInstallSQL = `
CREATE SCHEMA tenantguard;
REVOKE ALL ON SCHEMA tenantguard FROM PUBLIC;
GRANT USAGE ON SCHEMA tenantguard TO ` + isoRole + `;
CREATE TABLE tenantguard.binding_key (id int PRIMARY KEY CHECK (id = 1), ipad bytea NOT NULL, opad bytea NOT NULL, max_age interval NOT NULL);
INSERT INTO tenantguard.binding_key VALUES (1, '\x00', '\x00', '1 hour');
CREATE FUNCTION tenantguard.current_tenant() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$ BEGIN RETURN NULL; END $fn$;
CREATE TABLE public.orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL);
INSERT INTO public.orders (tenant_id, item) VALUES ('acme', 'a'), ('globex', 'g');
ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.orders FORCE ROW LEVEL SECURITY;
CREATE POLICY tenantguard_isolation ON public.orders AS PERMISSIVE FOR ALL TO PUBLIC
	USING (tenant_id = (SELECT tenantguard.current_tenant())) WITH CHECK (tenant_id = (SELECT tenantguard.current_tenant()));`

// TestBootstrapUpgradesOldInstall: pg bootstrap over an installation of
// the per-statement binding replaces it, and the check then passes
// without the warnings an old installation gets.
func TestBootstrapUpgradesOldInstall(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 60*time.Second)
	if err := pg.Exec(ctx, "postgres", "CREATE DATABASE iso_upgrade"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Exec(context.Background(), "postgres", "DROP DATABASE iso_upgrade WITH (FORCE)") })
	if err := pg.Exec(ctx, "iso_upgrade", oldInstallSQL); err != nil {
		t.Fatal(err)
	}
	snap := isoPolicy(t)
	spec := isoSpec()
	spec.Tables = spec.Tables[:1] // orders only
	upstream := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/iso_upgrade?sslmode=disable", isoRole, isoPassword, pg.Port())
	p := startProxyWith(t, pg, spec, func(c *proxypgConfig) {
		c.Databases = []proxypgDatabase{{Name: "app", URL: upstream}}
		c.Binder = isoBinder
	})
	admin, err := pgx.Connect(ctx, pg.AdminURL("iso_upgrade"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if err := rls.Bootstrap(ctx, admin, isoRole, snap, isoBinder); err == nil {
		t.Fatal("bootstrap with a table the database lacks succeeded") // events is not here
	}
	// The old installation fails the check: nothing can bind.
	if _, err := p.srv.CheckIsolation(ctx); err == nil || !strings.Contains(err.Error(), "tenantguard.bind(text, integer, bigint, text) is missing") {
		t.Fatalf("check of the old installation: %v", err)
	}
	only, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := rls.Bootstrap(ctx, admin, isoRole, only, isoBinder); err != nil {
			t.Fatalf("bootstrap over the old installation, run %d: %v", i+1, err)
		}
	}
	var src string
	var secdef bool
	if err := admin.QueryRow(ctx, `SELECT prosrc, prosecdef FROM pg_proc WHERE oid = 'tenantguard.current_tenant()'::regprocedure`).Scan(&src, &secdef); err != nil {
		t.Fatal(err)
	}
	if secdef || !strings.Contains(src, "tenant_binding") {
		t.Fatalf("current_tenant() not replaced: SECURITY DEFINER %v, body %s", secdef, src)
	}
	w, err := p.srv.CheckIsolation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(w, "\n"); strings.Contains(s, "older tenantguard") || strings.Contains(s, "does not default") {
		t.Fatalf("warnings after the upgrade: %s", s)
	}
	c := p.connect(t, p.acmeURL())
	mustSee(t, ctx, c, "acme", map[string]int{"acme": 1})
}
