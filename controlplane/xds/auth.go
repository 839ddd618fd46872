package xds

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tenantguard/tenantguard/internal/bearer"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Access says which xDS streams are let in, and what they may claim to be.
// The policy carries every tenant's SCRAM verifiers, so only data planes
// may read it. A stream is let in by either means configured:
//
//   - a client certificate that the listener's TLS verified (its
//     client_ca_file): the node id every request of the stream names must
//     then be one of NodeIDs of that certificate, else the stream ends
//     with PermissionDenied (and the refusal is logged), token or not;
//   - the bearer token, as "authorization: Bearer <token>".
//
// With neither configured every stream is let in. A stream let in by
// neither may still ask for the Public resource types (Envoy's listeners,
// routes and clusters, which hold addresses and no secrets, so that an
// edge Envoy needs no credential); its first request for another type
// ends it with Unauthenticated.
type Access struct {
	// Token, if set, lets in a stream that presents it.
	Token *bearer.Token
	// ClientCertificates says that the listener verifies client
	// certificates, which then let streams in.
	ClientCertificates bool
	// TrustDomain, if set, is the only SPIFFE trust domain whose ids name
	// nodes.
	TrustDomain string
	// Public are the resource types any stream may read.
	Public []string
	// Logger receives refusals of node ids; nil discards them.
	Logger *slog.Logger
}

// RequireToken returns the interceptor of Access{Token: &token, Public:
// public}: streams without the token read only the public types.
func RequireToken(token bearer.Token, public ...string) grpc.StreamServerInterceptor {
	return Access{Token: &token, Public: public}.StreamInterceptor()
}

// StreamInterceptor returns a gRPC stream interceptor that enforces a.
func (a Access) StreamInterceptor() grpc.StreamServerInterceptor {
	log := a.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	public := make(map[string]bool, len(a.Public))
	for _, t := range a.Public {
		public[t] = true
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		g := &guardedStream{ServerStream: ss, log: log}
		switch leaf := verifiedClient(ss.Context()); {
		case leaf != nil:
			g.ids = NodeIDs(leaf, a.TrustDomain)
			g.bound, g.subject = true, leaf.Subject.String()
		case a.Token != nil && hasToken(ss.Context(), *a.Token):
		case a.Token == nil && !a.ClientCertificates:
			// No authentication configured (the control plane warns).
		case len(public) == 0:
			return status.Error(codes.Unauthenticated, a.wanted(""))
		default:
			g.public, g.wanted = public, a.wanted
		}
		if !g.bound && g.public == nil {
			return handler(srv, ss)
		}
		err := handler(srv, g)
		// go-control-plane ends a stream whose Recv fails with status OK:
		// report the refusal instead.
		if refused := g.refusal(); refused != nil {
			return refused
		}
		return err
	}
}

// wanted is the refusal of a stream without credentials, asking for
// typeURL ("" for any).
func (a Access) wanted(typeURL string) string {
	var what string
	switch {
	case a.Token != nil && a.ClientCertificates:
		what = "a client certificate (controlplane.tls) or the control plane's bearer token (controlplane.token)"
	case a.ClientCertificates:
		what = "a client certificate (controlplane.tls)"
	default:
		what = "the control plane's bearer token (controlplane.token)"
	}
	if typeURL == "" {
		return "xDS needs " + what
	}
	return fmt.Sprintf("xDS needs %s for %q", what, typeURL)
}

func hasToken(ctx context.Context, token bearer.Token) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if token.Matches(v) {
			return true
		}
	}
	return false
}

// verifiedClient is the client certificate that the stream's TLS
// connection verified, nil if none.
func verifiedClient(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// guardedStream checks each request of a stream: with bound, the node id
// it names against ids; with public set, its type.
type guardedStream struct {
	grpc.ServerStream
	log *slog.Logger

	bound   bool
	ids     []string
	subject string

	public map[string]bool
	wanted func(typeURL string) string

	mu      sync.Mutex
	named   bool // a request named its node
	refused error
}

func (g *guardedStream) RecvMsg(m any) error {
	if err := g.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	var typeURL string
	var node *corev3.Node
	switch r := m.(type) {
	case *discovery.DiscoveryRequest:
		typeURL, node = r.GetTypeUrl(), r.GetNode()
	case *discovery.DeltaDiscoveryRequest:
		typeURL, node = r.GetTypeUrl(), r.GetNode()
	case *policypb.LoadReport:
		// The connection budget's report stream (controlplane/budget),
		// on the same server: its node must be the certificate's too, or
		// a data plane could report, and take shares, as another.
		if id := r.GetNodeId(); id != "" {
			node = &corev3.Node{Id: id}
		}
	}
	if g.bound {
		if err := g.checkNode(node); err != nil {
			return g.refuse(err)
		}
	}
	if g.public != nil && !g.public[typeURL] {
		return g.refuse(status.Error(codes.Unauthenticated, g.wanted(typeURL)))
	}
	return nil
}

// checkNode accepts a request that names one of the certificate's node
// ids, or that names none after one that did (xDS sends the node on a
// stream's first request only).
func (g *guardedStream) checkNode(node *corev3.Node) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if node == nil {
		if g.named {
			return nil
		}
		return status.Error(codes.PermissionDenied, "xDS: the first request must name its node (the client certificate's identity)")
	}
	id := node.GetId()
	if !slices.Contains(g.ids, id) {
		addr := ""
		if p, ok := peer.FromContext(g.Context()); ok {
			addr = p.Addr.String()
		}
		g.log.Warn("xds: refused a node id its client certificate does not name", "node", id, "certificate_node_ids", g.ids, "subject", g.subject, "peer", addr)
		return status.Errorf(codes.PermissionDenied, "xDS: node id %q is not the client certificate's (%s)", id, describeIDs(g.ids))
	}
	g.named = true
	return nil
}

func describeIDs(ids []string) string {
	if len(ids) == 0 {
		return "it names no node"
	}
	return fmt.Sprintf("it names %q", ids)
}

func (g *guardedStream) refuse(err error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refused == nil {
		g.refused = err
	}
	return err
}

func (g *guardedStream) refusal() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refused
}
