package policy_test

import (
	"testing"

	"github.com/tenantguard/tenantguard/policy"
)

func compile(t *testing.T, version string, ids ...string) *policy.Snapshot {
	t.Helper()
	spec := policy.Spec{Version: version}
	for _, id := range ids {
		spec.Tenants = append(spec.Tenants, policy.TenantSpec{ID: id, Passwords: []string{id + "-secret-1"}})
	}
	s, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSnapshotLookups: a tenant removed from the policy (or suspended,
// which the control plane compiles the same way) is simply absent; a nil
// snapshot, no policy yet, has no tenants at all.
func TestSnapshotLookups(t *testing.T) {
	for _, tc := range []struct {
		name    string
		snap    *policy.Snapshot
		id      string
		want    bool
		version string
		ids     int
	}{
		{"present", compile(t, "v1", "acme", "globex"), "acme", true, "v1", 2},
		{"removed", compile(t, "v2", "globex"), "acme", false, "v2", 1},
		{"no policy yet", nil, "acme", false, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.snap.Tenant(tc.id)
			if ok != tc.want || ok && got.ID != tc.id || !ok && got != nil {
				t.Fatalf("Tenant(%q) = %v, %v; want found %v", tc.id, got, ok, tc.want)
			}
			if tc.snap.Version() != tc.version || len(tc.snap.TenantIDs()) != tc.ids || tc.snap.Tables() != nil {
				t.Fatalf("version %q, %d tenants, tables %v", tc.snap.Version(), len(tc.snap.TenantIDs()), tc.snap.Tables())
			}
		})
	}
}
