// Package discoverypb holds the xDS discovery messages of a data plane's
// policy subscription, wire-compatible with Envoy's
// envoy.service.discovery.v3 (see discovery.proto), and the client side of
// the Aggregated Discovery Service's two streams under Envoy's method
// names. It lets policy/xdsclient speak ADS without linking
// go-control-plane and the Envoy API.
package discoverypb

import (
	"context"

	"google.golang.org/grpc"
)

// The ADS methods, as Envoy's ads.proto names them: the service is
// envoy.service.discovery.v3.AggregatedDiscoveryService whatever proto
// package these messages are declared in.
const (
	StreamAggregatedResourcesMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	DeltaAggregatedResourcesMethod  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

// Both ADS methods stream in both directions.
var (
	streamDesc = grpc.StreamDesc{StreamName: "StreamAggregatedResources", ClientStreams: true, ServerStreams: true}
	deltaDesc  = grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ClientStreams: true, ServerStreams: true}
)

// StreamAggregatedResources opens a state-of-the-world ADS stream on cc.
func StreamAggregatedResources(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (grpc.BidiStreamingClient[DiscoveryRequest, DiscoveryResponse], error) {
	s, err := cc.NewStream(ctx, &streamDesc, StreamAggregatedResourcesMethod, callOptions(opts)...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[DiscoveryRequest, DiscoveryResponse]{ClientStream: s}, nil
}

// DeltaAggregatedResources opens an incremental (delta) ADS stream on cc.
func DeltaAggregatedResources(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (grpc.BidiStreamingClient[DeltaDiscoveryRequest, DeltaDiscoveryResponse], error) {
	s, err := cc.NewStream(ctx, &deltaDesc, DeltaAggregatedResourcesMethod, callOptions(opts)...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[DeltaDiscoveryRequest, DeltaDiscoveryResponse]{ClientStream: s}, nil
}

// callOptions marks the method as one of a fixed set (gRPC's metrics may
// then label by it), as protoc-gen-go-grpc's clients do.
func callOptions(opts []grpc.CallOption) []grpc.CallOption {
	return append([]grpc.CallOption{grpc.StaticMethod()}, opts...)
}
