package xds

import (
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tenantguard/tenantguard/internal/bearer"
)

// RequireToken returns a stream interceptor that refuses, with
// Unauthenticated, every stream whose "authorization" metadata is not
// "Bearer <token>". The policy carries every tenant's SCRAM verifiers, so
// only data planes may read it.
//
// A stream without the token may still ask for the resource types in
// public: Envoy's listeners, routes and clusters, which hold addresses and
// no secrets, so that an edge Envoy needs no token in its bootstrap. Its
// first request for any other type ends it with Unauthenticated.
func RequireToken(token bearer.Token, public ...string) grpc.StreamServerInterceptor {
	allowed := make(map[string]bool, len(public))
	for _, t := range public {
		allowed[t] = true
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		ok := false
		for _, v := range md.Get("authorization") {
			ok = ok || token.Matches(v)
		}
		if ok {
			return handler(srv, ss)
		}
		if len(allowed) == 0 {
			return status.Error(codes.Unauthenticated, "xDS needs the control plane's bearer token (controlplane.token)")
		}
		w := &publicOnly{ServerStream: ss, allowed: allowed}
		err := handler(srv, w)
		// go-control-plane ends a stream whose Recv fails with status OK:
		// report the refusal instead.
		if refused := w.refusal(); refused != nil {
			return refused
		}
		return err
	}
}

// publicOnly is a stream without the token: its requests may name only
// the allowed types.
type publicOnly struct {
	grpc.ServerStream
	allowed map[string]bool
	mu      sync.Mutex
	refused error
}

func (p *publicOnly) RecvMsg(m any) error {
	if err := p.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	var typeURL string
	switch r := m.(type) {
	case *discovery.DiscoveryRequest:
		typeURL = r.GetTypeUrl()
	case *discovery.DeltaDiscoveryRequest:
		typeURL = r.GetTypeUrl()
	}
	if p.allowed[typeURL] {
		return nil
	}
	err := status.Errorf(codes.Unauthenticated, "xDS needs the control plane's bearer token (controlplane.token) for %q", typeURL)
	p.mu.Lock()
	p.refused = err
	p.mu.Unlock()
	return err
}

func (p *publicOnly) refusal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}
