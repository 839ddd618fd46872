package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// installedVariant is what tenantguard installs today: rls.Bootstrap on
// the variant's table, bound with rls.BindSQL. pgbench cannot compute an
// HMAC, so its connections bind through bench_tg.bind_self, a bench-only
// helper that signs in SQL with the installed key (once per connection,
// outside the measured statement).
var installedVariant = variant{
	name: "tenantguard", rls: true,
	what: "what pg bootstrap installs (proxy/pg/rls): the verified tenant's number in a sequence's currval, set only by the SECURITY DEFINER tenantguard.bind after it checks the HMAC; the policy calls tenantguard.current_tenant() (PL/pgSQL, not SECURITY DEFINER), which looks the name up in tenantguard.tenant (itself under RLS); no write per switch",
	install: func(ctx context.Context, admin *pgx.Conn) error {
		snap, err := policy.Compile(policy.Spec{
			Tenants: []policy.TenantSpec{{ID: tenantID, Passwords: []string{"unused-1"}}, {ID: otherID, Passwords: []string{"unused-2"}}},
			Tables:  []policy.TableSpec{{Name: "public." + installedTable, TenantColumn: "tenant_id"}},
		})
		if err != nil {
			return err
		}
		if err := rls.Bootstrap(ctx, admin, appRole, snap, benchBinder()); err != nil {
			return err
		}
		_, err = admin.Exec(ctx, fmt.Sprintf(bindSelfSQL, appRole))
		return err
	},
	bind: sqlf(`SELECT bench_tg.bind_self('%s');`),
}

// installedTable is installedVariant's table (variant.table).
const installedTable = "t_tenantguard"

// bindSelfSQL is the bench-only helper that binds the caller's own backend
// with a binding signed in SQL; %s is the role that may call it.
const bindSelfSQL = `CREATE SCHEMA IF NOT EXISTS bench_tg;
GRANT USAGE ON SCHEMA bench_tg TO %[1]s;
CREATE OR REPLACE FUNCTION bench_tg.bind_self(t text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  k record;
  ts bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
  pid int := pg_backend_pid();
BEGIN
  SELECT ipad, opad INTO k FROM tenantguard.binding_key WHERE id = 1;
  PERFORM tenantguard.bind(t, pid, ts, encode(sha256(k.opad || sha256(k.ipad || convert_to(t || '.' || pid || '.' || ts, 'UTF8'))), 'hex'));
END $fn$;
GRANT EXECUTE ON FUNCTION bench_tg.bind_self(text) TO %[1]s`

// benchBinder signs with bindingKey.
func benchBinder() *rls.Binder {
	b, err := rls.NewBinder([]byte(bindingKey), time.Hour)
	if err != nil {
		panic(err) // bindingKey is a constant of the right length
	}
	return b
}
