package xds

import (
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
func RequireToken(token bearer.Token) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		ok := false
		for _, v := range md.Get("authorization") {
			ok = ok || token.Matches(v)
		}
		if !ok {
			return status.Error(codes.Unauthenticated, "xDS needs the control plane's bearer token (controlplane.token)")
		}
		return handler(srv, ss)
	}
}
