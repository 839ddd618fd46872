package policypb_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Seeds shared by both targets (JSON is YAML); more live in
// testdata/fuzz/FuzzParseYAML and testdata/fuzz/FuzzParseJSON.
var fuzzSeeds = []string{
	"",
	"{}",
	`{"version": "1", "tenants": [{"id": "acme", "credentials": ["` + acmeVerifier1 + `"], "limits": {"statement_timeout": "1.5s"}}]}`,
	`{"tables": [{"name": "public.orders", "tenant_column": "tenant_id"}, {"name": "public.c", "shared": true}]}`,
	`{"redis": {"namespace": "NAMESPACE_MODE_ONE_SLOT", "emulate": ["flushdb"]}, "sessions": {"ttl": "60s", "maxAge": "30s", "endMode": 2, "stripAuthorization": false}}`,
	`{"redis": {"namespace": 9}, "sessions": {"end_mode": -1, "grace": "-1s"}}`,
	`{"tenants": [null, {"id": "x", "credentials": ["plaintext"]}]}`,
	`{"name": "default", "sessions": {"ttl": "1h", "maxAge": "1m30s", "grace": "-250ms", "end_mode": "Immediate"}, "redis": {"namespace": "one-slot"}}`,
	`{"clusters": [{"name": "eu", "default": true, "postgres": {"hosts": ["db-1:5432", "db-2"], "max_server_connections": 40}}, {"name": "r", "redis": {"cluster_seeds": ["10.0.0.1:7000"]}}], "tenants": [{"id": "a", "placement": {"postgres": "eu", "redis": "r"}}]}`,
	`{"tenants": [{"id": "a", "limits": {"statement_timeout": "1.5µs"}}], "sessions": {"ttl": "2562047h47m16.854775807s", "grace": "-2562047h47m16.854775808s"}}`,
}

// FuzzParseYAML: ParseYAML never panics; what it refuses it refuses the
// same way every time; what it accepts validates the same way every time
// and survives MarshalJSON/MarshalYAML round trips unchanged.
func FuzzParseYAML(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Add(readFile(f, "testdata/two-tenants.yaml"))
	f.Fuzz(func(t *testing.T, data []byte) { checkParsed(t, policypb.ParseYAML, data) })
}

// FuzzParseJSON is FuzzParseYAML for ParseJSON.
func FuzzParseJSON(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Add(readFile(f, "testdata/two-tenants.json"))
	f.Fuzz(func(t *testing.T, data []byte) { checkParsed(t, policypb.ParseJSON, data) })
}

func checkParsed(t *testing.T, parse func([]byte) (*policypb.Policy, error), data []byte) {
	p, err := parse(data)
	if err != nil {
		if _, again := parse(data); again == nil || again.Error() != err.Error() {
			t.Fatalf("refused as %q, then as %v", err, again)
		}
		return
	}
	before := proto.CloneOf(p)
	verr := policypb.Validate(p)
	if again := policypb.Validate(p); (verr == nil) != (again == nil) || verr != nil && verr.Error() != again.Error() {
		t.Fatalf("Validate gave %v, then %v", verr, again)
	}
	if !proto.Equal(p, before) {
		t.Fatal("Validate changed the policy")
	}
	if verr == nil {
		if _, err := policypb.ToSpec(p); err != nil {
			t.Fatalf("valid policy, but ToSpec: %v", err)
		}
	}
	js, err := policypb.MarshalJSON(p)
	if err != nil {
		t.Fatalf("MarshalJSON of an accepted policy: %v", err)
	}
	fromJSON, err := policypb.ParseJSON(js)
	if err != nil || !proto.Equal(fromJSON, p) {
		t.Fatalf("JSON round trip of\n%s\ngave %v, %v", js, fromJSON, err)
	}
	if js2, _ := policypb.MarshalJSON(fromJSON); !bytes.Equal(js, js2) {
		t.Fatalf("MarshalJSON is not stable:\n%s\n%s", js, js2)
	}
	y, err := policypb.MarshalYAML(p)
	if err != nil {
		t.Fatalf("MarshalYAML of an accepted policy: %v", err)
	}
	fromYAML, err := policypb.ParseYAML(y)
	if err != nil || !proto.Equal(fromYAML, p) {
		t.Fatalf("YAML round trip of\n%s\ngave %v, %v", y, fromYAML, err)
	}
}
