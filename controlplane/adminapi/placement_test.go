package adminapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
)

// TestPlacement: PUT /v1/tenants/{id}/placement moves a tenant in one new
// version, audited as "place" with the old and the new placement; an
// unknown cluster is an invalid policy naming the field; the same
// placement again writes nothing.
func TestPlacement(t *testing.T) {
	s := newServer(t)
	body := fmt.Sprintf(`{"tenants": [{"id": "acme", "credentials": [%q]}, {"id": "globex", "credentials": [%q]}],
		"clusters": [{"name": "eu", "postgres": {"hosts": ["db-eu:5432"]}}, {"name": "cache", "redis": {"cluster_seeds": ["10.0.0.1:7000"]}}]}`, credential(t), credential(t))
	if r := s.do("PUT", "/v1/policy", body); r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.raw)
	}
	for _, tc := range []struct {
		name, tenant, body string
		status             int
		code               string
		version            int64
		changed            bool
	}{
		{"place", "acme", `{"postgres": "eu"}`, 200, "", 2, true},
		{"again", "acme", `{"postgres": "eu"}`, 200, "", 2, false},
		{"redis cluster too", "acme", `{"postgres": "eu", "redis": "cache"}`, 200, "", 3, true},
		{"unknown cluster", "globex", `{"postgres": "us"}`, 400, adminapi.CodeInvalidPolicy, 0, false},
		{"wrong kind", "globex", `{"postgres": "cache"}`, 400, adminapi.CodeInvalidPolicy, 0, false},
		{"unknown field", "globex", `{"postgre": "eu"}`, 400, adminapi.CodeInvalidRequest, 0, false},
		{"unknown tenant", "initech", `{"postgres": "eu"}`, 404, adminapi.CodeUnknownTenant, 0, false},
		{"back to the default", "acme", `{}`, 200, "", 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do("PUT", "/v1/tenants/"+tc.tenant+"/placement", tc.body, "X-Author", "ops")
			if r.status != tc.status || r.errorCode() != tc.code {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if tc.status == 200 && (r.num("version") != tc.version || r.body["changed"] != tc.changed) {
				t.Fatalf("%s", r.raw)
			}
			if tc.code == adminapi.CodeInvalidPolicy && !strings.Contains(r.raw, "placement.postgres") {
				t.Fatalf("the error does not name the field: %s", r.raw)
			}
		})
	}
	if v := s.do("GET", "/v1/policy/versions/3", ""); !strings.Contains(v.raw, `"placement":{"postgres":"eu","redis":"cache"}`) {
		t.Fatalf("version 3: %s", v.raw)
	}
	r := s.do("GET", "/v1/audit", "")
	entries := r.body["entries"].([]any)
	if len(entries) != 4 {
		t.Fatalf("%d audit entries: %s", len(entries), r.raw)
	}
	e := entries[2].(map[string]any)
	d := e["detail"].(map[string]any)
	from := d["from"].(map[string]any)
	if e["action"] != "place" || e["actor"] != "ops" || d["tenant"] != "acme" || d["redis"] != "cache" || from["postgres"] != "eu" || from["redis"] != "" {
		t.Fatalf("audit entry %v", e)
	}
}
