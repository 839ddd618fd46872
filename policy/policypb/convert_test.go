package policypb_test

import (
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// TestToSpecCompiles: the realistic two-tenant policy, read from YAML,
// compiles into the snapshot the data plane reads.
func TestToSpecCompiles(t *testing.T) {
	p, err := policypb.ParseYAML(readFile(t, "testdata/two-tenants.yaml"))
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
	if snap.Version() != "42" {
		t.Errorf("Version = %q", snap.Version())
	}
	if got := snap.TenantIDs(); !reflect.DeepEqual(got, []string{"acme", "globex"}) {
		t.Errorf("TenantIDs = %v", got)
	}
	acme, _ := snap.Tenant("acme")
	if want := (policy.Limits{MaxConnections: 50, MaxTransactions: 10, StatementTimeout: 30 * time.Second, CommandsPerSecond: 5000}); acme.Limits != want {
		t.Errorf("acme limits = %+v, want %+v", acme.Limits, want)
	}
	if want := (policy.Permissions{Read: true, Write: true}); acme.Allow != want || acme.ShowConstraintDetail {
		t.Errorf("acme allow = %+v, detail %v", acme.Allow, acme.ShowConstraintDetail)
	}
	globex, _ := snap.Tenant("globex")
	if want := (policy.Permissions{Read: true}); globex.Allow != want || !globex.ShowConstraintDetail || globex.Limits.StatementTimeout != 2500*time.Millisecond {
		t.Errorf("globex = %+v", globex)
	}
	if len(acme.Verifiers()) != 2 || len(globex.Verifiers()) != 1 {
		t.Errorf("verifiers: acme %d, globex %d", len(acme.Verifiers()), len(globex.Verifiers()))
	}
	if !verifies(snap, "acme", "acme-secret-2") || !verifies(snap, "globex", "globex-secret") || verifies(snap, "globex", "acme-secret-1") {
		t.Error("credentials do not authenticate as expected")
	}
	wantTables := []policy.TableSpec{{Name: "public.orders", TenantColumn: "tenant_id"}, {Name: "public.currencies", Shared: true}}
	if got := snap.Tables(); !reflect.DeepEqual(got, wantTables) {
		t.Errorf("Tables = %+v", got)
	}

	// What the Spec cannot hold is read from the message.
	if got := p.GetRedis().GetNamespace().ConfigName(); got != "one-slot" {
		t.Errorf("namespace = %q", got)
	}
	if got := p.GetRedis().EmulateSet(); !reflect.DeepEqual(got, map[string]bool{"flushdb": true, "dbsize": true}) {
		t.Errorf("EmulateSet = %v", got)
	}
	if got := p.GetSessions().GetEndMode().EndMode(); got != policy.SessionEndBoundary {
		t.Errorf("end mode = %q", got)
	}
}

// TestToSpecLeavesOutSuspended: a data plane compiling the Spec must refuse
// a suspended tenant, and policy.Spec has no other way to say so.
func TestToSpecLeavesOutSuspended(t *testing.T) {
	p := twoTenants()
	p.Tenants[0].Suspended = true
	spec, err := policypb.ToSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.Tenant("acme"); ok {
		t.Fatal("the suspended tenant is in the snapshot")
	}
	if _, ok := snap.Tenant("globex"); !ok {
		t.Fatal("globex is missing")
	}
}

func TestFromSpec(t *testing.T) {
	p := twoTenants()
	p.Redis, p.Sessions = nil, nil
	spec, err := policypb.ToSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	if back := policypb.FromSpec(spec); !proto.Equal(back, p) {
		t.Fatalf("FromSpec(ToSpec(p)) = %v\nwant %v", back, p)
	}
	// An invalid Spec stays invalid, with the same field.
	spec.Tenants[1].Limits.MaxConnections = -1 << 40
	err = policypb.Validate(policypb.FromSpec(spec))
	if err == nil || err.Error() != "tenants[1].limits.max_connections: must not be negative" {
		t.Fatalf("Validate(FromSpec(invalid)) = %v", err)
	}
}

func TestAccessorDefaults(t *testing.T) {
	var none *policypb.SessionSettings
	if !none.StripsAuthorization() || !(&policypb.SessionSettings{}).StripsAuthorization() {
		t.Error("strip_authorization unset must mean strip")
	}
	if (&policypb.SessionSettings{StripAuthorization: proto.Bool(false)}).StripsAuthorization() {
		t.Error("strip_authorization: false must not strip")
	}
	for m, want := range map[policypb.SessionEndMode]policy.SessionEndMode{
		policypb.SessionEndMode_SESSION_END_MODE_UNSPECIFIED: policy.SessionEndBoundary,
		policypb.SessionEndMode_SESSION_END_MODE_BOUNDARY:    policy.SessionEndBoundary,
		policypb.SessionEndMode_SESSION_END_MODE_IMMEDIATE:   policy.SessionEndImmediate,
		42: policy.SessionEndImmediate,
	} {
		if got := m.EndMode(); got != want {
			t.Errorf("%v.EndMode() = %q, want %q", m, got, want)
		}
	}
	for m, want := range map[policypb.NamespaceMode]string{0: "spread", 1: "spread", 2: "one-slot", 3: ""} {
		if got := m.ConfigName(); got != want {
			t.Errorf("%v.ConfigName() = %q, want %q", m, got, want)
		}
	}
	var rules *policypb.RedisRules
	if got := rules.EmulateSet(); len(got) != 0 {
		t.Errorf("nil rules emulate %v", got)
	}
}
