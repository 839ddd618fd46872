package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

const (
	placedRole     = "tg_placed"
	placedPassword = "placed-pw"
)

var placedSetup sync.Map // cluster port -> *sync.Once

// placedDB creates, once per cluster, database "placed" with table
// orders (tenant_id) owned by the superuser and granted to placedRole:
// no row-level security until pg bootstrap installs it.
func placedDB(t *testing.T, pg *pgcluster.Cluster) {
	t.Helper()
	once, _ := placedSetup.LoadOrStore(pg.Port(), &sync.Once{})
	once.(*sync.Once).Do(func() {
		ctx := context.Background()
		for _, q := range []string{
			"CREATE DATABASE placed",
			"CREATE ROLE " + placedRole + " LOGIN PASSWORD '" + placedPassword + "' NOSUPERUSER NOBYPASSRLS",
		} {
			if err := pg.Exec(ctx, "postgres", q); err != nil {
				t.Fatalf("setup %q: %v", q, err)
			}
		}
		for _, q := range []string{
			"CREATE TABLE orders (id serial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL)",
			"GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO " + placedRole,
			"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO " + placedRole,
		} {
			if err := pg.Exec(ctx, "placed", q); err != nil {
				t.Fatalf("setup %q: %v", q, err)
			}
		}
	})
}

// rlsForced reports whether orders on pg has FORCE ROW LEVEL SECURITY.
func rlsForced(t *testing.T, pg *pgcluster.Cluster) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pg.AdminURL("placed"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var forced bool
	if err := c.QueryRow(ctx, "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.orders'::regclass").Scan(&forced); err != nil {
		t.Fatal(err)
	}
	return forced
}

// TestPGToolsEveryCluster runs pg check and pg bootstrap on a
// configuration whose policy places a tenant on a second cluster: before
// bootstrap, check reports the second cluster's unprotected table too;
// bootstrap (with the first cluster's administrator URL) protects both;
// check then passes on both. The second form takes the clusters from a
// policy file (--policy) instead of the configuration.
func TestPGToolsEveryCluster(t *testing.T) {
	for _, tc := range []struct {
		name       string
		policyFile bool // clusters come from a --policy file, not the configuration
	}{
		{"clusters in the configuration", false},
		{"clusters in a policy file", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := harness.Postgres(t)
			// One cluster per case.
			b := harness.PostgresNamed(t, "pgtools-"+strings.ReplaceAll(tc.name, " ", "-"))
			placedDB(t, a)
			placedDB(t, b)
			// Both start unprotected, also when an earlier run in this
			// process (-count) bootstrapped the shared clusters.
			for _, pg := range []*pgcluster.Cluster{a, b} {
				if err := pg.Exec(context.Background(), "placed", "ALTER TABLE orders NO FORCE ROW LEVEL SECURITY"); err != nil {
					t.Fatal(err)
				}
			}
			clusters := fmt.Sprintf(`clusters:
  - name: b
    postgres:
      hosts: ["127.0.0.1:%d"]
`, b.Port())
			yml := fmt.Sprintf(`listen:
  postgres: 127.0.0.1:0
postgres:
  databases:
    - name: placed
      url: "postgres://%s:%s@127.0.0.1:%d/placed?sslmode=disable"
isolation:
  binding_key: 0123456789abcdef0123456789abcdef
  tables:
    - name: public.orders
      tenant_column: tenant_id
tenants:
  - id: acme
    passwords: [%q]
`, placedRole, placedPassword, a.Port(), acmeSecret)
			if !tc.policyFile {
				yml += `  - id: globex
    passwords: ["globex-secret-1"]
    placement: {postgres: b}
` + clusters
			}
			cfg, err := config.Parse("test", []byte(yml))
			if err != nil {
				t.Fatal(err)
			}
			if tc.policyFile {
				p := policypb.FromSpec(policy.Spec{
					Tenants: []policy.TenantSpec{
						{ID: "acme", Passwords: []string{acmeSecret}},
						{ID: "globex", Passwords: []string{"globex-secret-1"}, Placement: policy.Placement{Postgres: "b"}},
					},
					Tables:   []policy.TableSpec{{Name: "public.orders", TenantColumn: "tenant_id"}},
					Clusters: []policy.ClusterSpec{{Name: "b", Postgres: &policy.PostgresCluster{Hosts: []string{fmt.Sprintf("127.0.0.1:%d", b.Port())}}}},
				})
				if err := policypb.HashCredentials(p); err != nil {
					t.Fatal(err)
				}
				js, err := protojson.Marshal(p)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(t.TempDir(), "policy.json")
				if err := os.WriteFile(path, js, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := UsePolicyFile(cfg, path); err != nil {
					t.Fatalf("UsePolicyFile: %v", err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			var out bytes.Buffer
			if err := Check(ctx, cfg, &out); err == nil {
				t.Fatalf("check before bootstrap passed:\n%s", out.String())
			}
			if !strings.Contains(out.String(), "b/placed: PROBLEM") {
				t.Fatalf("check before bootstrap does not report cluster b:\n%s", out.String())
			}

			out.Reset()
			if err := Bootstrap(ctx, cfg, a.AdminURL("postgres"), &out); err != nil {
				t.Fatalf("bootstrap: %v\n%s", err, out.String())
			}
			for _, want := range []string{
				fmt.Sprintf("configured upstream (127.0.0.1:%d): bootstrapped database placed", a.Port()),
				fmt.Sprintf("cluster b (127.0.0.1:%d): bootstrapped database placed", b.Port()),
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("bootstrap output lacks %q:\n%s", want, out.String())
				}
			}
			for name, pg := range map[string]*pgcluster.Cluster{"configured": a, "b": b} {
				if !rlsForced(t, pg) {
					t.Errorf("%s cluster: orders has no FORCE ROW LEVEL SECURITY after bootstrap", name)
				}
			}

			out.Reset()
			if err := Check(ctx, cfg, &out); err != nil {
				t.Fatalf("check after bootstrap: %v\n%s", err, out.String())
			}
			for _, want := range []string{"placed: ok", "b/placed: ok"} {
				if !strings.Contains(out.String(), want+"\n") {
					t.Errorf("check output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}
