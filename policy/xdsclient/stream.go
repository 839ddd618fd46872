package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tenantguard/tenantguard/policy/policypb"
	discovery "github.com/tenantguard/tenantguard/policy/xdsclient/internal/discoverypb"
)

// maxMessageBytes bounds one response from the control plane.
const maxMessageBytes = 64 << 20

// resourceWrapperURL is the type URL of Envoy's Resource (decoded as
// discovery.Resource, its wire twin), in which a SotW response may wrap a
// resource (to give it a TTL).
const resourceWrapperURL = "type.googleapis.com/envoy.service.discovery.v3.Resource"

func (c *Client) dialOptions() []grpc.DialOption {
	creds := c.opts.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Notice a control plane that vanished without closing the
		// connection (the server must allow it: xds.ServerOptions).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: c.opts.Backoff.Initial, Multiplier: 2, Jitter: 0.2, MaxDelay: c.opts.Backoff.Max},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)),
	}
	if c.opts.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(c.opts.Token)))
	}
	return append(opts, c.opts.DialOptions...)
}

// bearer sends the control plane's token with every stream.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false: without Options.Credentials the
// transport is plaintext (loopback, or a network the operator trusts, with
// a warning); with them the token travels encrypted.
func (bearer) RequireTransportSecurity() bool { return false }

func (c *Client) node() *discovery.Node {
	return &discovery.Node{Id: c.opts.NodeID, Cluster: c.opts.Cluster, UserAgentName: "tenantguard"}
}

// nackDetail is the error_detail of a NACK.
func nackDetail(err error) *discovery.Status {
	return &discovery.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// sotwSession runs one state-of-the-world ADS stream. Every response
// carries the whole policy; the ACK names the response's version and
// nonce, a NACK the version still in force and the error.
func (c *Client) sotwSession(ctx context.Context, cc grpc.ClientConnInterface) (bool, error) {
	// WaitForReady: while the control plane is down, wait for the
	// connection (redialled with Backoff) rather than fail at once.
	stream, err := discovery.StreamAggregatedResources(ctx, cc, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	names := []string{c.opts.ResourceName}
	// version_info on the first request is the version in force, as Envoy
	// sends after a reconnection.
	if err := stream.Send(&discovery.DiscoveryRequest{
		Node: c.node(), TypeUrl: policypb.TypeURL, ResourceNames: names, VersionInfo: c.Version(),
	}); err != nil {
		return false, err
	}
	c.m.connected.Set(1)
	delivered := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			return delivered, err
		}
		delivered = true
		if resp.GetTypeUrl() != policypb.TypeURL {
			c.log.Warn("xds: ignoring a response of a type not subscribed to", "type", resp.GetTypeUrl())
			continue
		}
		version := resp.GetVersionInfo()
		p, err := sotwPolicy(resp.GetResources(), c.opts.ResourceName)
		if err == nil {
			err = c.update(version, p, true)
		}
		reply := &discovery.DiscoveryRequest{TypeUrl: policypb.TypeURL, ResourceNames: names, ResponseNonce: resp.GetNonce()}
		if err != nil {
			c.rejected(version, err)
			reply.ErrorDetail = nackDetail(err)
		}
		reply.VersionInfo = c.Version() // the response's version after an ACK
		if err := stream.Send(reply); err != nil {
			return delivered, err
		}
	}
}

// deltaSession runs one incremental ADS stream. A response carries the
// policy only when it changed; its version is the response's
// system_version_info.
func (c *Client) deltaSession(ctx context.Context, cc grpc.ClientConnInterface) (bool, error) {
	stream, err := discovery.DeltaAggregatedResources(ctx, cc, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	// No initial_resource_versions: the server sends the policy it serves
	// now, which is applied only if it differs from the one in force.
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{
		Node: c.node(), TypeUrl: policypb.TypeURL, ResourceNamesSubscribe: []string{c.opts.ResourceName},
	}); err != nil {
		return false, err
	}
	c.m.connected.Set(1)
	delivered := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			return delivered, err
		}
		delivered = true
		if resp.GetTypeUrl() != policypb.TypeURL {
			c.log.Warn("xds: ignoring a response of a type not subscribed to", "type", resp.GetTypeUrl())
			continue
		}
		var uerr error
		for _, r := range resp.GetResources() {
			if r.GetName() != c.opts.ResourceName {
				continue
			}
			p, err := decodePolicy(r.GetResource())
			version := resp.GetSystemVersionInfo()
			if version == "" {
				version = p.GetVersion()
			}
			if err == nil {
				err = c.update(version, p, true)
			}
			if err != nil {
				c.rejected(version, err)
				uerr = err
			}
		}
		if slices.Contains(resp.GetRemovedResources(), c.opts.ResourceName) {
			// No policy is not a policy: keep enforcing the last good one.
			c.log.Warn("xds: the control plane removed the policy; keeping the one in force", "version", c.Version())
		}
		reply := &discovery.DeltaDiscoveryRequest{TypeUrl: policypb.TypeURL, ResponseNonce: resp.GetNonce()}
		if uerr != nil {
			reply.ErrorDetail = nackDetail(uerr)
		}
		if err := stream.Send(reply); err != nil {
			return delivered, err
		}
	}
}

// sotwPolicy finds the policy named name among a SotW response's
// resources. A response without it is refused: an absent policy never
// replaces the one in force.
func sotwPolicy(resources []*anypb.Any, name string) (*policypb.Policy, error) {
	var unnamed []*policypb.Policy
	for _, a := range resources {
		if a.GetTypeUrl() == resourceWrapperURL {
			var r discovery.Resource
			if err := proto.Unmarshal(a.GetValue(), &r); err != nil {
				return nil, fmt.Errorf("decode resource wrapper: %w", err)
			}
			a = r.GetResource()
		}
		p, err := decodePolicy(a)
		if err != nil {
			return nil, err
		}
		switch p.GetName() {
		case name:
			return p, nil
		case "":
			unnamed = append(unnamed, p)
		}
	}
	if len(unnamed) == 1 && len(resources) == 1 {
		return unnamed[0], nil // a control plane that does not name it
	}
	if len(resources) == 0 {
		return nil, errors.New("the response carries no policy")
	}
	return nil, fmt.Errorf("the response carries no policy named %q", name)
}

// decodePolicy unpacks one policy resource.
func decodePolicy(a *anypb.Any) (*policypb.Policy, error) {
	if a.GetTypeUrl() != policypb.TypeURL {
		return nil, fmt.Errorf("resource of type %q, want %q", a.GetTypeUrl(), policypb.TypeURL)
	}
	p := &policypb.Policy{}
	if err := proto.Unmarshal(a.GetValue(), p); err != nil {
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	return p, nil
}
