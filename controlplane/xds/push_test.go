package xds_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// TestPushes: a data plane applies and ACKs what the control plane pushes,
// within a second; a version it cannot apply is NACKed with its error,
// seen by the server, and not resent, while the previous version stays in
// force; the next good version applies.
func TestPushes(t *testing.T) {
	for _, pr := range protocols {
		t.Run(pr.name, func(t *testing.T) {
			cp := startControlPlane(t, "")
			if err := cp.SetPolicy("1", testPolicy(1)); err != nil {
				t.Fatal(err)
			}
			dp := startDataPlane(t, cp.addr, "node-a", pr.delta, filepath.Join(t.TempDir(), "policy.json"))
			dp.waitApplied(t, "1")
			<-dp.Ready()
			cp.waitAcked(t, "node-a", "1")
			if got := dp.Policy().GetName(); got != xds.PolicyResourceName {
				t.Errorf("the pushed policy is named %q, want %q", got, xds.PolicyResourceName)
			}
			want := testPolicy(1)
			want.Name, want.Version = "default", "1"
			if got := dp.Policy(); !proto.Equal(got, want) {
				t.Errorf("the data plane got\n%v\nwant\n%v", got, want)
			}
			if len(dp.Policy().ProtoReflect().GetUnknown()) != 0 {
				t.Error("the pushed policy has fields the data plane does not know")
			}

			// 50 pushes, each waited for; the time from SetPolicy to Apply.
			var lat []time.Duration
			for i := 2; i <= 51; i++ {
				v := strconv.Itoa(i)
				start := time.Now()
				if err := cp.SetPolicy(v, testPolicy(i)); err != nil {
					t.Fatal(err)
				}
				dp.waitApplied(t, v)
				lat = append(lat, time.Since(start))
			}
			cp.waitAcked(t, "node-a", "51")
			slices.Sort(lat)
			p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
			t.Logf("%s: SetPolicy to Apply over %d pushes: p50 %v, p99 %v, max %v", pr.name, len(lat), p50, p99, lat[len(lat)-1])
			// Logged, not asserted: a timed bound fails on a busy machine
			// (p99 1.9s once in CI); waitApplied fails a push that never
			// arrives, and bench/xds measures the latency.

			// A version that validates but that the data plane refuses.
			if err := cp.SetPolicy("bad", brokenPolicy()); err != nil {
				t.Fatal(err)
			}
			st := cp.waitStatus(t, "node-a", "NACK of bad", func(st NodeStatus) bool { return st.NackedVersion == "bad" })
			if !contains(st.LastError, "tenant broken: the data plane cannot compile it") || !contains(st.LastError, "policy bad was not applied") {
				t.Errorf("server saw NACK error %q", st.LastError)
			}
			if st.AckedVersion != "51" {
				t.Errorf("after the NACK the server has AckedVersion %q, want 51", st.AckedVersion)
			}
			if got := dp.Version(); got != "51" {
				t.Errorf("after the NACK the data plane has version %q, want 51", got)
			}
			if got := dp.Policy().GetTenants()[0].GetLimits().GetMaxConnections(); got != 51 {
				t.Errorf("after the NACK the policy in force has max_connections %d, want 51's", got)
			}

			// The next good version applies, and "bad" was tried once:
			// the server did not resend it in a loop in between.
			if err := cp.SetPolicy("52", testPolicy(52)); err != nil {
				t.Fatal(err)
			}
			dp.waitApplied(t, "52")
			cp.waitAcked(t, "node-a", "52")
			if n := len(dp.refused); n != 1 {
				t.Errorf("Apply refused %d times, want once (a NACKed version must not be resent)", n)
			}
			if got := metric(t, dp.reg, "tenantguard_policy_nacks_total"); got != 1 {
				t.Errorf("client tenantguard_policy_nacks_total = %v, want 1", got)
			}
			if got := metric(t, cp.reg, "tenantguard_xds_nacks_total", "type", "policy"); got != 1 {
				t.Errorf("server tenantguard_xds_nacks_total{type=policy} = %v, want 1", got)
			}
			if got := metric(t, cp.reg, "tenantguard_xds_acks_total", "type", "policy"); got < 52 {
				t.Errorf("server tenantguard_xds_acks_total{type=policy} = %v, want at least 52", got)
			}
			if got := metric(t, cp.reg, "tenantguard_xds_streams", "protocol", pr.name); got != 1 {
				t.Errorf("server tenantguard_xds_streams{protocol=%s} = %v, want 1", pr.name, got)
			}
			if got := metric(t, cp.reg, "tenantguard_xds_nodes_current"); got != 1 {
				t.Errorf("server tenantguard_xds_nodes_current = %v, want 1", got)
			}
			if got := metric(t, dp.reg, "tenantguard_policy_version_info", "version", "52"); got != 1 {
				t.Errorf("client tenantguard_policy_version_info{version=52} = %v, want 1", got)
			}
			if got := metric(t, dp.reg, "tenantguard_policy_connected"); got != 1 {
				t.Errorf("client tenantguard_policy_connected = %v, want 1", got)
			}
		})
	}
}

// NodeStatus is xds.NodeStatus, short for the callbacks above.
type NodeStatus = xds.NodeStatus

// TestManyNodes: one snapshot serves every node; all of them get a push.
func TestManyNodes(t *testing.T) {
	cp := startControlPlane(t, "")
	if err := cp.SetPolicy("1", testPolicy(1)); err != nil {
		t.Fatal(err)
	}
	var dps []*dataPlane
	for i := range 20 {
		dps = append(dps, startDataPlane(t, cp.addr, fmt.Sprintf("node-%d", i), i%2 == 1, ""))
	}
	if err := cp.SetPolicy("2", testPolicy(2)); err != nil {
		t.Fatal(err)
	}
	for i, dp := range dps {
		dp.waitApplied(t, "2")
		cp.waitAcked(t, fmt.Sprintf("node-%d", i), "2")
	}
	if got := len(cp.NodeStatus()); got != 20 {
		t.Errorf("NodeStatus has %d nodes, want 20", got)
	}
}

// TestSetPolicyRefuses: the server validates at its edge.
func TestSetPolicyRefuses(t *testing.T) {
	s := xds.New(xds.Options{})
	defer s.Close()
	invalid := testPolicy(1)
	invalid.Tenants[0].Credentials = []string{"plaintext-password"}
	cases := []struct {
		name    string
		version string
		p       func() *policypb.Policy
		want    string
	}{
		{"empty version", "", func() *policypb.Policy { return testPolicy(1) }, "empty version"},
		{"invalid policy", "2", func() *policypb.Policy { return invalid }, "tenants[0].credentials[0]: not a SCRAM-SHA-256 verifier"},
		{"nil policy", "2", func() *policypb.Policy { return nil }, "policy is nil"},
		{"version reused with other contents", "1", func() *policypb.Policy { return testPolicy(2) }, xds.ErrVersionReused.Error()},
	}
	if err := s.SetPolicy("1", testPolicy(1)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.SetPolicy(tc.version, tc.p())
			if err == nil || !contains(err.Error(), tc.want) {
				t.Fatalf("SetPolicy = %v, want an error with %q", err, tc.want)
			}
			if s.Version() != "1" {
				t.Fatalf("version %q after a refused SetPolicy", s.Version())
			}
		})
	}
	// The same version with the same contents is a no-op.
	p := testPolicy(1)
	before := proto.CloneOf(p)
	if err := s.SetPolicy("1", p); err != nil {
		t.Fatalf("SetPolicy of the version in force, unchanged: %v", err)
	}
	if !proto.Equal(p, before) {
		t.Fatal("SetPolicy changed its argument")
	}
}
