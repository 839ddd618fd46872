package policy_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/policy"
)

func placed(id string, pl policy.Placement) policy.TenantSpec {
	return policy.TenantSpec{ID: id, Passwords: []string{id + "-secret-1"}, Placement: pl}
}

// TestPlacementResolves: a placed tenant gets its cluster, an unplaced one
// the default of each kind, or the configured upstream ("") without one.
func TestPlacementResolves(t *testing.T) {
	spec := policy.Spec{
		Clusters: []policy.ClusterSpec{
			{Name: "main", Default: true, Postgres: &policy.PostgresCluster{MaxServerConnections: 40}},
			{Name: "eu", Postgres: &policy.PostgresCluster{Hosts: []string{"db-eu-1", "10.0.0.7:5433", "[::1]:6000"}, Database: "app", User: "tg_app", Credentials: "eu"}},
			{Name: "cache-eu", Redis: &policy.RedisCluster{Seeds: []string{"10.0.1.1:7000", "10.0.1.2:7000"}}},
		},
		Tenants: []policy.TenantSpec{
			placed("acme", policy.Placement{}),
			placed("globex", policy.Placement{Postgres: "eu", Redis: "cache-eu"}),
		},
	}
	s, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	acme, _ := s.Tenant("acme")
	globex, _ := s.Tenant("globex")
	if name, c := s.PostgresCluster(acme); name != "main" || c.MaxServerConnections != 40 || len(c.Hosts) != 0 {
		t.Fatalf("acme's postgres cluster = %q %+v, want the default main", name, c)
	}
	if name, c := s.RedisCluster(acme); name != "" || c != nil {
		t.Fatalf("acme's redis = %q %+v, want the configured upstream", name, c)
	}
	name, c := s.PostgresCluster(globex)
	if name != "eu" || strings.Join(c.Hosts, ",") != "db-eu-1:5432,10.0.0.7:5433,[::1]:6000" {
		t.Fatalf("globex's postgres cluster = %q %+v", name, c)
	}
	if name, r := s.RedisCluster(globex); name != "cache-eu" || !r.IsCluster() {
		t.Fatalf("globex's redis = %q %+v", name, r)
	}
	if b := s.Budgets(); len(b) != 1 || b[0].Name != "main" {
		t.Fatalf("budgets = %v", b)
	}
	// Compile copies: changing the spec afterwards changes nothing.
	spec.Clusters[1].Postgres.Hosts[0] = "elsewhere"
	if _, c := s.PostgresCluster(globex); c.Hosts[0] != "db-eu-1:5432" {
		t.Fatalf("the snapshot shares the spec's host list: %v", c.Hosts)
	}
	// No clusters: every tenant on the configured upstream.
	plain := compile(t, "v1", "acme")
	a, _ := plain.Tenant("acme")
	if name, c := plain.PostgresCluster(a); name != "" || c != nil || plain.ClusterNames() != nil {
		t.Fatalf("no clusters: %q %+v", name, c)
	}
}

// TestPlacementInvalid: each wrong cluster or placement is refused with
// the field that is wrong.
func TestPlacementInvalid(t *testing.T) {
	pg := func(hosts ...string) *policy.PostgresCluster { return &policy.PostgresCluster{Hosts: hosts} }
	for _, tc := range []struct {
		name     string
		clusters []policy.ClusterSpec
		place    policy.Placement
		field    string
	}{
		{"bad name", []policy.ClusterSpec{{Name: "EU", Postgres: pg()}}, policy.Placement{}, "clusters[0].name"},
		{"twice", []policy.ClusterSpec{{Name: "a", Postgres: pg()}, {Name: "a", Postgres: pg()}}, policy.Placement{}, "clusters[1].name"},
		{"empty", []policy.ClusterSpec{{Name: "a"}}, policy.Placement{}, "clusters[0]"},
		{"two defaults", []policy.ClusterSpec{{Name: "a", Default: true, Postgres: pg()}, {Name: "b", Default: true, Postgres: pg()}}, policy.Placement{}, "clusters[1].default"},
		{"bad port", []policy.ClusterSpec{{Name: "a", Postgres: pg("db:0")}}, policy.Placement{}, "clusters[0].postgres.hosts[0]"},
		{"bad host", []policy.ClusterSpec{{Name: "a", Postgres: pg("db host:5432")}}, policy.Placement{}, "clusters[0].postgres.hosts[0]"},
		{"url as host", []policy.ClusterSpec{{Name: "a", Postgres: pg("postgres://x@db/app")}}, policy.Placement{}, "clusters[0].postgres.hosts[0]"},
		{"control character in user", []policy.ClusterSpec{{Name: "a", Postgres: &policy.PostgresCluster{User: "tg\napp"}}}, policy.Placement{}, "clusters[0].postgres.user"},
		{"negative budget", []policy.ClusterSpec{{Name: "a", Postgres: &policy.PostgresCluster{MaxServerConnections: -1}}}, policy.Placement{}, "clusters[0].postgres.max_server_connections"},
		{"minimum without budget", []policy.ClusterSpec{{Name: "a", Postgres: &policy.PostgresCluster{MinPerSidecar: 2}}}, policy.Placement{}, "clusters[0].postgres.min_per_sidecar"},
		{"redis neither", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{}}}, policy.Placement{}, "clusters[0].redis"},
		{"redis both", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Address: "r:6379", Seeds: []string{"r:7000"}}}}, policy.Placement{}, "clusters[0].redis"},
		{"redis without port", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Address: "r"}}}, policy.Placement{}, "clusters[0].redis.address"},
		{"redis seed twice", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Seeds: []string{"r:7000", "r:7000"}}}}, policy.Placement{}, "clusters[0].redis.cluster_seeds[1]"},
		{"unknown cluster", nil, policy.Placement{Postgres: "nowhere"}, "tenants[0].placement.postgres"},
		{"redis cluster for postgres", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Address: "r:6379"}}}, policy.Placement{Postgres: "r"}, "tenants[0].placement.postgres"},
		{"postgres cluster for redis", []policy.ClusterSpec{{Name: "a", Postgres: pg()}}, policy.Placement{Redis: "a"}, "tenants[0].placement.redis"},
		{"unknown redis cluster", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Address: "r:6379"}}}, policy.Placement{Redis: "nowhere"}, "tenants[0].placement.redis"},
		{"two redis defaults", []policy.ClusterSpec{{Name: "r", Default: true, Redis: &policy.RedisCluster{Address: "r:6379"}}, {Name: "s", Default: true, Redis: &policy.RedisCluster{Address: "s:6379"}}}, policy.Placement{}, "clusters[1].default"},
		{"redis url as address", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Address: "redis://r:6379"}}}, policy.Placement{}, "clusters[0].redis.address"},
		{"redis seed bad port", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Seeds: []string{"r:7000", "r:70000"}}}}, policy.Placement{}, "clusters[0].redis.cluster_seeds[1]"},
		{"redis bad credentials name", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Address: "r:6379", Credentials: "Cache User"}}}, policy.Placement{}, "clusters[0].redis.credentials"},
		{"redis too many seeds", []policy.ClusterSpec{{Name: "r", Redis: &policy.RedisCluster{Seeds: manySeeds(policy.MaxHosts + 1)}}}, policy.Placement{}, "clusters[0].redis.cluster_seeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.Compile(policy.Spec{Clusters: tc.clusters, Tenants: []policy.TenantSpec{placed("acme", tc.place)}})
			var fe *policy.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Compile = %v, want an error in %s", err, tc.field)
			}
		})
	}
}

// manySeeds is n distinct seed addresses.
func manySeeds(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "10.0.0.1:" + strconv.Itoa(7000+i)
	}
	return out
}
