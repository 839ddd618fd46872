package policypb_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// TestPlacementYAML: clusters and placements written by hand (a
// PostgreSQL cluster by host list, a budgeted default that is the
// sidecars' own upstream, a Redis Cluster by seeds and a standalone Redis)
// parse, validate, compile, and survive FromSpec and the JSON round trip.
func TestPlacementYAML(t *testing.T) {
	p, err := policypb.ParseYAML([]byte(`
clusters:
  - name: main
    default: true
    postgres: {max_server_connections: 60, min_per_sidecar: 2}
  - name: eu
    postgres:
      hosts: [db-eu-1.internal:5432, db-eu-2.internal]
      database: app
      user: tg_app
      credentials: pg-eu
    redis: {cluster_seeds: ["10.1.0.1:7000", "10.1.0.2:7000"]}
  - name: cache2
    redis: {address: "10.2.0.1:6379"}
tenants:
  - id: acme
    credentials: ["` + acmeVerifier1 + `"]
  - id: globex
    credentials: ["` + acmeVerifier1 + `"]
    placement: {postgres: eu, redis: cache2}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := policypb.Validate(p); err != nil {
		t.Fatal(err)
	}
	spec, err := policypb.ToSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	globex, _ := snap.Tenant("globex")
	if name, c := snap.PostgresCluster(globex); name != "eu" || c.Hosts[1] != "db-eu-2.internal:5432" || c.Credentials != "pg-eu" {
		t.Fatalf("globex on %q %+v", name, c)
	}
	acme, _ := snap.Tenant("acme")
	if name, c := snap.PostgresCluster(acme); name != "main" || c.MaxServerConnections != 60 || c.MinPerSidecar != 2 {
		t.Fatalf("acme on %q %+v", name, c)
	}
	if _, r := snap.RedisCluster(globex); r.IsCluster() || r.Address != "10.2.0.1:6379" {
		t.Fatalf("globex's redis %+v", r)
	}
	if back := policypb.FromSpec(spec); !proto.Equal(back, p) {
		t.Fatalf("FromSpec(ToSpec(p)) differs:\n%v\n%v", back, p)
	}
	js, err := policypb.MarshalJSON(p)
	if err != nil {
		t.Fatal(err)
	}
	again, err := policypb.ParseJSON(js)
	if err != nil || !proto.Equal(again, p) {
		t.Fatalf("JSON round trip: %v", err)
	}
}

// TestPlacementValidate: Validate names the placement field at fault, in
// the message's own paths.
func TestPlacementValidate(t *testing.T) {
	for _, tc := range []struct{ name, yaml, field string }{
		{"unknown cluster", `{tenants: [{id: acme, credentials: ["` + acmeVerifier1 + `"], placement: {postgres: nowhere}}]}`, "tenants[0].placement.postgres"},
		{"redis both", `{clusters: [{name: r, redis: {address: "r:1", cluster_seeds: ["r:2"]}}]}`, "clusters[0].redis"},
		{"bad seed", `{clusters: [{name: r, redis: {cluster_seeds: ["r"]}}]}`, "clusters[0].redis.cluster_seeds[0]"},
		{"null cluster", `{clusters: [null]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policypb.ParseYAML([]byte(tc.yaml))
			if err != nil {
				if tc.field == "" {
					return // a null list entry is refused by the decoder already
				}
				t.Fatal(err)
			}
			err = policypb.Validate(p)
			var fe *policy.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Validate = %v, want an error in %q", err, tc.field)
			}
		})
	}
}
