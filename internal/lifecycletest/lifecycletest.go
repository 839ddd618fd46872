// Package lifecycletest builds the tenants' data the lifecycle tests
// operate on (a row-isolated schema with foreign keys, identity columns
// and several types, and keys in every tenant's namespace) and the
// byte-for-byte fingerprint of every other tenant's data that the tests
// compare before and after an operation.
package lifecycletest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// Role is the upstream role the sidecars (and the lifecycle) connect as:
// no superuser, no BYPASSRLS, owns nothing.
const (
	Role         = "tg_lifecycle_app"
	RolePassword = "tg_lifecycle_app_pw"
	// BindingKey is the sidecars' isolation.binding_key.
	BindingKey = "lifecycle-test-binding-key-0123456789"
)

// Tables are the row-isolated tables, in the policy's order: children
// before their parents, so that nothing works by luck of the order.
var Tables = []policy.TableSpec{
	{Name: "public.invoices", TenantColumn: "tenant_id"},
	{Name: "public.events", TenantColumn: "tenant_id"},
	{Name: "public.customers", TenantColumn: "tenant_id"},
	{Name: "public.plans", Shared: true},
}

const schema = `
CREATE TABLE public.customers (
	tenant_id text NOT NULL,
	id int NOT NULL,
	name text NOT NULL,
	meta jsonb,
	PRIMARY KEY (tenant_id, id));
CREATE TABLE public.invoices (
	tenant_id text NOT NULL,
	id int NOT NULL,
	customer_id int NOT NULL,
	total numeric(12,2) NOT NULL,
	issued timestamptz NOT NULL DEFAULT now(),
	note text,
	PRIMARY KEY (tenant_id, id),
	FOREIGN KEY (tenant_id, customer_id) REFERENCES public.customers (tenant_id, id));
CREATE TABLE public.events (
	tenant_id text NOT NULL,
	id bigint GENERATED ALWAYS AS IDENTITY,
	payload bytea,
	tags text[],
	total_x2 numeric GENERATED ALWAYS AS (length(payload) * 2) STORED,
	PRIMARY KEY (tenant_id, id));
CREATE TABLE public.plans (name text PRIMARY KEY, price int);
INSERT INTO public.plans VALUES ('basic', 10), ('pro', 50);
`

// Upstream is one application database with the schema, isolated.
type Upstream struct {
	PG       *pgcluster.Cluster
	DB       string
	AdminURL string // superuser, for setting up and fingerprinting
	AppURL   string // as Role
	Binder   *rls.Binder
}

// Setup creates database db with the schema and installs row isolation
// (rls.Bootstrap) for Role.
func Setup(t testing.TB, pg *pgcluster.Cluster, db string) *Upstream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pg.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "postgres", fmt.Sprintf(`DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN
			CREATE ROLE %s LOGIN PASSWORD '%s' NOSUPERUSER NOBYPASSRLS;
		END IF; END $$`, Role, Role, RolePassword)); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, db, schema); err != nil {
		t.Fatal(err)
	}
	b, err := rls.NewBinder([]byte(BindingKey), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{PG: pg, DB: db, AdminURL: pg.AdminURL(db), Binder: b,
		AppURL: fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", Role, RolePassword, pg.Port(), db)}
	snap, err := policy.Compile(policy.Spec{Tables: Tables})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, u.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if err := rls.Bootstrap(ctx, admin, Role, snap, b); err != nil {
		t.Fatal(err)
	}
	return u
}

// PolicyYAML is a policy with the tables and tenants (each with the
// password "<tenant>-password").
func PolicyYAML(tenants ...string) string {
	var b strings.Builder
	b.WriteString("name: default\ntables:\n")
	for _, t := range Tables {
		if t.Shared {
			fmt.Fprintf(&b, "  - {name: %s, shared: true}\n", t.Name)
		} else {
			fmt.Fprintf(&b, "  - {name: %s, tenant_column: %s}\n", t.Name, t.TenantColumn)
		}
	}
	b.WriteString("tenants:\n")
	for _, t := range tenants {
		fmt.Fprintf(&b, "  - {id: %s, credentials: [%q]}\n", t, Password(t))
	}
	return b.String()
}

// Password is the test password of tenant.
func Password(tenant string) string { return tenant + "-password" }

// SeedRows gives tenant n customers, each with two invoices, and n
// events, as the superuser (so that the test data does not depend on the
// code under test). Values differ per tenant.
func (u *Upstream) SeedRows(t testing.TB, tenant string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, u.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, q := range []string{
		`INSERT INTO public.customers SELECT $1, g, $1 || ' customer ' || g || ' — ünïcödé, "quotes", tab	', jsonb_build_object('n', g, 'tenant', $1)
			FROM generate_series(1, $2) g`,
		`INSERT INTO public.invoices (tenant_id, id, customer_id, total, issued, note)
			SELECT $1, g, (g + 1) / 2, g * 10.25, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour', CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
			FROM generate_series(1, $2 * 2) g`,
		`INSERT INTO public.events (tenant_id, payload, tags)
			SELECT $1, decode(md5($1 || g), 'hex'), ARRAY['t' || g, $1] FROM generate_series(1, $2) g`,
	} {
		if _, err := c.Exec(ctx, q, tenant, n); err != nil {
			t.Fatalf("seed %s: %v", tenant, err)
		}
	}
}

// Namespace is tenant's namespace in the default (spread) mode.
func Namespace(tenant string) *namespace.Namespace {
	return namespace.MustNew(tenant, namespace.Spread)
}

// SeedKeys stores n keys of several types in tenant's namespace, as the
// sidecar would, some with a time to live.
func SeedKeys(t testing.TB, rdb *goredis.Client, tenant string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := Namespace(tenant)
	k := func(s string) string { return string(ns.AppendKey(nil, []byte(s))) }
	pipe := rdb.Pipeline()
	for i := range n {
		pipe.Set(ctx, k(fmt.Sprintf("str:%d", i)), fmt.Sprintf("%s value %d", tenant, i), 0)
		if i%5 == 0 {
			pipe.Set(ctx, k(fmt.Sprintf("ttl:%d", i)), "expiring", time.Hour)
		}
	}
	pipe.RPush(ctx, k("list"), tenant, "b", "c")
	pipe.HSet(ctx, k("hash"), "owner", tenant, "n", n)
	pipe.ZAdd(ctx, k("zset"), goredis.Z{Score: 1, Member: tenant}, goredis.Z{Score: 2, Member: "two"})
	pipe.SAdd(ctx, k("set"), tenant, "x", "y")
	pipe.Set(ctx, k("bin\x00\xff"), []byte{0, 1, 2, 0xff}, 0)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("seed keys %s: %v", tenant, err)
	}
}

// Fingerprint is a digest of data, per tenant, byte for byte: every row
// of every row-isolated table (its text form as PostgreSQL gives it, in
// key order) and every key (its DUMP payload and whether it has a time to
// live).
type Fingerprint map[string]string

// Take fingerprints every tenant that has rows or keys, as the superuser
// and on redis-server directly (not through the code under test).
func Take(t testing.TB, u *Upstream, rdb *goredis.Client) Fingerprint {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := map[string][]string{}
	c, err := pgx.Connect(ctx, u.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, tbl := range Tables {
		if tbl.Shared {
			continue
		}
		rows, err := c.Query(ctx, "SELECT tenant_id, t::text FROM "+tbl.Name+" t ORDER BY tenant_id, id")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var tenant, text string
			if err := rows.Scan(&tenant, &text); err != nil {
				t.Fatal(err)
			}
			h[tenant] = append(h[tenant], tbl.Name+" "+text)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if rdb != nil {
		var keys []string
		iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		sort.Strings(keys)
		for _, k := range keys {
			tenant := "(no tenant)"
			if rest, ok := strings.CutPrefix(k, "t:"); ok {
				tenant, _, _ = strings.Cut(rest, ":")
			}
			dump, err := rdb.Dump(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			ttl, err := rdb.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			h[tenant] = append(h[tenant], fmt.Sprintf("key %q %x ttl=%v", k, dump, ttl > 0))
		}
	}
	out := Fingerprint{}
	for tenant, lines := range h {
		sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
		out[tenant] = fmt.Sprintf("%d items %s", len(lines), hex.EncodeToString(sum[:8]))
	}
	return out
}

// Without returns f less the given tenants.
func (f Fingerprint) Without(tenants ...string) Fingerprint {
	out := Fingerprint{}
	for k, v := range f {
		out[k] = v
	}
	for _, t := range tenants {
		delete(out, t)
	}
	return out
}

// Equal compares two fingerprints and names the first difference.
func (f Fingerprint) Equal(g Fingerprint) error {
	keys := map[string]bool{}
	for k := range f {
		keys[k] = true
	}
	for k := range g {
		keys[k] = true
	}
	var ks []string
	for k := range keys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		if f[k] != g[k] {
			return fmt.Errorf("tenant %s: %q before, %q after", k, f[k], g[k])
		}
	}
	return nil
}

// Counts returns tenant's rows per table, as the superuser.
func (u *Upstream) Counts(t testing.TB, tenant string) map[string]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, u.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	out := map[string]int64{}
	for _, tbl := range Tables {
		if tbl.Shared {
			continue
		}
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM "+tbl.Name+" WHERE tenant_id = $1", tenant).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[tbl.Name] = n
	}
	return out
}
