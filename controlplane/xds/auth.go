package xds

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// RequireToken returns a stream interceptor that refuses, with
// Unauthenticated, every stream whose "authorization" metadata is not
// "Bearer <token>". The policy carries every tenant's SCRAM verifiers, so
// only data planes may read it. Tokens are compared as SHA-256 digests in
// constant time.
func RequireToken(token string) grpc.StreamServerInterceptor {
	want := sha256.Sum256([]byte(token))
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		ok := false
		for _, v := range md.Get("authorization") {
			scheme, tok, found := strings.Cut(v, " ")
			got := sha256.Sum256([]byte(tok))
			if found && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
				ok = true
			}
		}
		if !ok {
			return status.Error(codes.Unauthenticated, "xDS needs the control plane's bearer token (controlplane.token)")
		}
		return handler(srv, ss)
	}
}
