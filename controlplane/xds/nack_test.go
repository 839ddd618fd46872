package xds_test

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/tenantguard/tenantguard/controlplane/xds"
)

// TestNACKNotResent drives the protocol by hand: after a NACK the next
// response on the stream is the next version, not the rejected one again
// (go-control-plane's snapshot cache alone would resend it at once).
func TestNACKNotResent(t *testing.T) {
	nack := &status.Status{Code: int32(codes.InvalidArgument), Message: "no thanks"}
	t.Run("sotw", func(t *testing.T) {
		cp := startControlPlane(t, "")
		if err := cp.SetPolicy("1", testPolicy(1)); err != nil {
			t.Fatal(err)
		}
		stream, err := rawADS(t, cp.addr).StreamAggregatedResources(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		req := &discovery.DiscoveryRequest{Node: &core.Node{Id: "raw"}, TypeUrl: xds.PolicyTypeURL, ResourceNames: []string{"default"}}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || resp.GetVersionInfo() != "1" || len(resp.GetResources()) != 1 {
			t.Fatalf("first response %v, %v", resp, err)
		}
		// NACK version 1: the node has nothing, so version_info is empty.
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: xds.PolicyTypeURL, ResourceNames: []string{"default"},
			ResponseNonce: resp.GetNonce(), ErrorDetail: nack}); err != nil {
			t.Fatal(err)
		}
		st := cp.waitStatus(t, "raw", "NACK of 1", func(st NodeStatus) bool { return st.NackedVersion == "1" })
		if st.LastError != "no thanks" || st.AckedVersion != "" {
			t.Errorf("status after the NACK: %+v", st)
		}
		if err := cp.SetPolicy("2", testPolicy(2)); err != nil {
			t.Fatal(err)
		}
		resp, err = stream.Recv()
		if err != nil || resp.GetVersionInfo() != "2" {
			t.Fatalf("after the NACK and version 2 the server sent %v, %v; want version 2", resp, err)
		}
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: xds.PolicyTypeURL, ResourceNames: []string{"default"},
			ResponseNonce: resp.GetNonce(), VersionInfo: "2"}); err != nil {
			t.Fatal(err)
		}
		cp.waitAcked(t, "raw", "2")
	})
	t.Run("delta", func(t *testing.T) {
		cp := startControlPlane(t, "")
		if err := cp.SetPolicy("1", testPolicy(1)); err != nil {
			t.Fatal(err)
		}
		stream, err := rawADS(t, cp.addr).DeltaAggregatedResources(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "raw"}, TypeUrl: xds.PolicyTypeURL,
			ResourceNamesSubscribe: []string{"default"}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || resp.GetSystemVersionInfo() != "1" || len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "default" {
			t.Fatalf("first response %v, %v", resp, err)
		}
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: xds.PolicyTypeURL, ResponseNonce: resp.GetNonce(), ErrorDetail: nack}); err != nil {
			t.Fatal(err)
		}
		cp.waitStatus(t, "raw", "NACK of 1", func(st NodeStatus) bool { return st.NackedVersion == "1" && st.LastError == "no thanks" })
		if err := cp.SetPolicy("2", testPolicy(2)); err != nil {
			t.Fatal(err)
		}
		resp, err = stream.Recv()
		if err != nil || resp.GetSystemVersionInfo() != "2" {
			t.Fatalf("after the NACK and version 2 the server sent %v, %v; want version 2", resp, err)
		}
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: xds.PolicyTypeURL, ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		cp.waitAcked(t, "raw", "2")
	})
}
