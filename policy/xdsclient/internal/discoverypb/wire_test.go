package discoverypb_test

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tenantguard/tenantguard/policy/xdsclient/internal/discoverypb"
)

// TestFieldsMatchEnvoy: every field of every message here has the number,
// name, type and cardinality of the same field in Envoy's message, down
// through nested messages (google.protobuf.Any is the same message in
// both).
func TestFieldsMatchEnvoy(t *testing.T) {
	for _, tc := range []struct {
		mine, envoy proto.Message
	}{
		{&discoverypb.DiscoveryRequest{}, &envoy.DiscoveryRequest{}},
		{&discoverypb.DiscoveryResponse{}, &envoy.DiscoveryResponse{}},
		{&discoverypb.DeltaDiscoveryRequest{}, &envoy.DeltaDiscoveryRequest{}},
		{&discoverypb.DeltaDiscoveryResponse{}, &envoy.DeltaDiscoveryResponse{}},
		{&discoverypb.Resource{}, &envoy.Resource{}},
		{&discoverypb.Node{}, &corev3.Node{}},
		{&discoverypb.Status{}, &rpcstatus.Status{}},
	} {
		mine, theirs := tc.mine.ProtoReflect().Descriptor(), tc.envoy.ProtoReflect().Descriptor()
		t.Run(string(mine.Name()), func(t *testing.T) { sameFields(t, mine, theirs) })
	}
}

func sameFields(t *testing.T, mine, theirs protoreflect.MessageDescriptor) {
	t.Helper()
	if mine.Name() != theirs.Name() {
		t.Errorf("%s is a twin of %s", mine.FullName(), theirs.FullName())
	}
	fields := mine.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		g := theirs.Fields().ByNumber(f.Number())
		switch {
		case g == nil:
			t.Errorf("%s: %s has no field %d", f.FullName(), theirs.FullName(), f.Number())
			continue
		case f.Name() != g.Name() || f.Kind() != g.Kind() || f.Cardinality() != g.Cardinality() || f.IsMap() != g.IsMap():
			t.Errorf("%s = %d is %v %v, %s = %d is %v %v", f.FullName(), f.Number(), f.Cardinality(), f.Kind(),
				g.FullName(), g.Number(), g.Cardinality(), g.Kind())
			continue
		}
		if f.Kind() == protoreflect.MessageKind && f.Message().FullName() != g.Message().FullName() {
			sameFields(t, f.Message(), g.Message())
		}
	}
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// TestEncodingsMatch: a message here and Envoy's with the same values
// encode to the same bytes, and what Envoy sends with fields left out here
// decodes to the fields that are here.
func TestEncodingsMatch(t *testing.T) {
	policy := &anypb.Any{TypeUrl: "type.googleapis.com/tenantguard.policy.v1.Policy", Value: []byte{0x0a, 0x07, 'd', 'e', 'f', 'a', 'u', 'l', 't'}}
	detail, _ := anypb.New(&durationpb.Duration{Seconds: 1})
	node := &discoverypb.Node{Id: "n1", Cluster: "c1", UserAgentName: "tenantguard"}
	envoyNode := &corev3.Node{Id: "n1", Cluster: "c1", UserAgentName: "tenantguard"}
	for _, tc := range []struct {
		name        string
		mine, envoy proto.Message
	}{
		{"subscription",
			&discoverypb.DiscoveryRequest{VersionInfo: "7", Node: node, ResourceNames: []string{"default"}, TypeUrl: policy.TypeUrl},
			&envoy.DiscoveryRequest{VersionInfo: "7", Node: envoyNode, ResourceNames: []string{"default"}, TypeUrl: policy.TypeUrl}},
		{"NACK",
			&discoverypb.DiscoveryRequest{VersionInfo: "7", ResourceNames: []string{"default"}, TypeUrl: policy.TypeUrl, ResponseNonce: "3",
				ErrorDetail: &discoverypb.Status{Code: 3, Message: "policy 8 is invalid", Details: []*anypb.Any{detail}}},
			&envoy.DiscoveryRequest{VersionInfo: "7", ResourceNames: []string{"default"}, TypeUrl: policy.TypeUrl, ResponseNonce: "3",
				ErrorDetail: &rpcstatus.Status{Code: 3, Message: "policy 8 is invalid", Details: []*anypb.Any{detail}}}},
		{"response",
			&discoverypb.DiscoveryResponse{VersionInfo: "8", Resources: []*anypb.Any{policy}, TypeUrl: policy.TypeUrl, Nonce: "4"},
			&envoy.DiscoveryResponse{VersionInfo: "8", Resources: []*anypb.Any{policy}, TypeUrl: policy.TypeUrl, Nonce: "4"}},
		{"delta subscription",
			&discoverypb.DeltaDiscoveryRequest{Node: node, TypeUrl: policy.TypeUrl, ResourceNamesSubscribe: []string{"default"}},
			&envoy.DeltaDiscoveryRequest{Node: envoyNode, TypeUrl: policy.TypeUrl, ResourceNamesSubscribe: []string{"default"}}},
		{"delta NACK",
			&discoverypb.DeltaDiscoveryRequest{TypeUrl: policy.TypeUrl, ResponseNonce: "5", ErrorDetail: &discoverypb.Status{Code: 3, Message: "no"}},
			&envoy.DeltaDiscoveryRequest{TypeUrl: policy.TypeUrl, ResponseNonce: "5", ErrorDetail: &rpcstatus.Status{Code: 3, Message: "no"}}},
		{"delta response",
			&discoverypb.DeltaDiscoveryResponse{SystemVersionInfo: "9", TypeUrl: policy.TypeUrl, Nonce: "6", RemovedResources: []string{"old"},
				Resources: []*discoverypb.Resource{{Name: "default", Version: "hash", Resource: policy}}},
			&envoy.DeltaDiscoveryResponse{SystemVersionInfo: "9", TypeUrl: policy.TypeUrl, Nonce: "6", RemovedResources: []string{"old"},
				Resources: []*envoy.Resource{{Name: "default", Version: "hash", Resource: policy}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := deterministic.Marshal(tc.mine)
			if err != nil {
				t.Fatal(err)
			}
			b, err := deterministic.Marshal(tc.envoy)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("encodings differ:\nhere:  %x\nEnvoy: %x", a, b)
			}
			back := tc.mine.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(b, back); err != nil || !proto.Equal(back, tc.mine) {
				t.Fatalf("Envoy's bytes decode to %v (%v), want %v", back, err, tc.mine)
			}
		})
	}

	// Fields this package leaves out arrive as unknown fields and leave
	// the known ones intact.
	meta, _ := structpb.NewStruct(map[string]any{"k": "v"})
	full := &envoy.DeltaDiscoveryResponse{SystemVersionInfo: "9", TypeUrl: policy.TypeUrl, Nonce: "6",
		ControlPlane: &corev3.ControlPlane{Identifier: "cp"},
		Resources: []*envoy.Resource{{Name: "default", Version: "hash", Resource: policy, Aliases: []string{"a"},
			Ttl: durationpb.New(5e9), Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"x": meta}}}},
	}
	b, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var got discoverypb.DeltaDiscoveryResponse
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	r := got.GetResources()
	if got.GetSystemVersionInfo() != "9" || got.GetNonce() != "6" || len(r) != 1 || r[0].GetName() != "default" ||
		r[0].GetVersion() != "hash" || !proto.Equal(r[0].GetResource(), policy) {
		t.Fatalf("decoded %v", &got)
	}
}

// TestMethodNames: the streams are opened under go-control-plane's names
// for them, which its server registers.
func TestMethodNames(t *testing.T) {
	for _, tc := range []struct{ mine, envoy string }{
		{discoverypb.StreamAggregatedResourcesMethod, envoy.AggregatedDiscoveryService_StreamAggregatedResources_FullMethodName},
		{discoverypb.DeltaAggregatedResourcesMethod, envoy.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName},
	} {
		if tc.mine != tc.envoy {
			t.Errorf("method %q, Envoy's is %q", tc.mine, tc.envoy)
		}
	}
}
