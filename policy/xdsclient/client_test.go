package xdsclient_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 15 * time.Second

const verifier = "SCRAM-SHA-256$4096:OLopLdLn2iIXV2xKEo1XcA==$//3M5CupSzKX1w6u8HiK635fFImcH0okPkDYYZHP8jQ=:ZiWR3X/MmfuYovCcz0sGV9woCQm3U1q95TjeelpKh+A="

func testPolicy(tenants ...string) *policypb.Policy {
	p := &policypb.Policy{Name: policypb.DefaultName}
	for _, id := range tenants {
		p.Tenants = append(p.Tenants, &policypb.Tenant{Id: id, Credentials: []string{verifier}})
	}
	return p
}

// apply is the test data planes' Apply: tenant "refused" makes it fail,
// tenant "panic" makes it panic; it reports what it accepted on applied.
func apply(applied chan<- string) func(string, *policypb.Policy) error {
	return func(version string, p *policypb.Policy) error {
		for _, t := range p.GetTenants() {
			switch t.GetId() {
			case "refused":
				return fmt.Errorf("tenant refused: cannot compile")
			case "panic":
				panic("compiler bug")
			}
		}
		applied <- version
		return nil
	}
}

func packed(t *testing.T, p *policypb.Policy) *anypb.Any {
	t.Helper()
	a, err := anypb.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// reply is what the client answered to one response.
type reply struct {
	version, nonce string
	errCode        int32
	errMsg         string
}

// fakeADS is a scripted control plane: the test hands it responses one at
// a time and reads the client's replies.
type fakeADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	first   chan *discovery.DiscoveryRequest
	firstD  chan *discovery.DeltaDiscoveryRequest
	send    chan *discovery.DiscoveryResponse
	sendD   chan *discovery.DeltaDiscoveryResponse
	replies chan reply
}

func (f *fakeADS) StreamAggregatedResources(s discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	req, err := s.Recv()
	if err != nil {
		return err
	}
	f.first <- req
	for {
		select {
		case resp := <-f.send:
			if err := s.Send(resp); err != nil {
				return err
			}
			r, err := s.Recv()
			if err != nil {
				return err
			}
			f.replies <- reply{r.GetVersionInfo(), r.GetResponseNonce(), r.GetErrorDetail().GetCode(), r.GetErrorDetail().GetMessage()}
		case <-s.Context().Done():
			return nil
		}
	}
}

func (f *fakeADS) DeltaAggregatedResources(s discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	req, err := s.Recv()
	if err != nil {
		return err
	}
	f.firstD <- req
	for {
		select {
		case resp := <-f.sendD:
			if err := s.Send(resp); err != nil {
				return err
			}
			r, err := s.Recv()
			if err != nil {
				return err
			}
			f.replies <- reply{"", r.GetResponseNonce(), r.GetErrorDetail().GetCode(), r.GetErrorDetail().GetMessage()}
		case <-s.Context().Done():
			return nil
		}
	}
}

// startFake serves a fakeADS on loopback TCP until the test ends.
func startFake(t *testing.T) (*fakeADS, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeADS{
		first: make(chan *discovery.DiscoveryRequest, 1), firstD: make(chan *discovery.DeltaDiscoveryRequest, 1),
		send: make(chan *discovery.DiscoveryResponse), sendD: make(chan *discovery.DeltaDiscoveryResponse),
		replies: make(chan reply, 1),
	}
	g := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(g, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return f, lis.Addr().String()
}

// runClient runs a client until the test ends.
func runClient(t *testing.T, opts xdsclient.Options) *xdsclient.Client {
	t.Helper()
	c := xdsclient.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("no %s after %s", what, waitFor)
		panic("unreachable")
	}
}

// TestResponsesSotW: what a state-of-the-world response can carry, and
// the ACK or NACK it gets. After every NACK the version in force is the
// last good one, and the NACK names it.
func TestResponsesSotW(t *testing.T) {
	f, addr := startFake(t)
	applied := make(chan string, 16)
	c := runClient(t, xdsclient.Options{ServerAddr: addr, NodeID: "n1", Cluster: "c1", Apply: apply(applied)})
	first := recv(t, f.first, "subscription")
	if first.GetNode().GetId() != "n1" || first.GetNode().GetCluster() != "c1" || first.GetTypeUrl() != policypb.TypeURL ||
		len(first.GetResourceNames()) != 1 || first.GetResourceNames()[0] != "default" || first.GetVersionInfo() != "" {
		t.Fatalf("subscription %v", first)
	}
	wrongType, _ := anypb.New(&discovery.DiscoveryRequest{})
	cases := []struct {
		name      string
		version   string
		resources []*anypb.Any
		nack      string // "" = ACK
		inForce   string
	}{
		{"first policy", "1", []*anypb.Any{packed(t, testPolicy("acme"))}, "", "1"},
		{"no resources", "2", nil, "the response carries no policy", "1"},
		{"resource of another type", "2", []*anypb.Any{wrongType}, "resource of type", "1"},
		{"undecodable bytes", "2", []*anypb.Any{{TypeUrl: policypb.TypeURL, Value: []byte{0xff, 0xff, 0xff}}}, "decode policy", "1"},
		{"other name only", "2", []*anypb.Any{packed(t, &policypb.Policy{Name: "other"})}, `no policy named "default"`, "1"},
		{"invalid policy", "2", []*anypb.Any{packed(t, &policypb.Policy{Name: "default", Tenants: []*policypb.Tenant{{Id: "acme", Credentials: []string{"plaintext"}}}})},
			"policy 2 is invalid: tenants[0].credentials[0]: not a SCRAM-SHA-256 verifier", "1"},
		{"apply refuses", "2", []*anypb.Any{packed(t, testPolicy("acme", "refused"))}, "policy 2 was not applied: tenant refused: cannot compile", "1"},
		{"apply panics", "2", []*anypb.Any{packed(t, testPolicy("panic"))}, "apply panicked: compiler bug", "1"},
		{"empty version", "", []*anypb.Any{packed(t, testPolicy("acme", "globex"))}, "the policy has no version", "1"},
		{"next good policy among others", "3", []*anypb.Any{packed(t, &policypb.Policy{Name: "other"}), packed(t, testPolicy("acme", "globex"))}, "", "3"},
		{"same version again", "3", []*anypb.Any{packed(t, testPolicy("acme", "globex"))}, "", "3"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nonce := fmt.Sprint(i + 1)
			f.send <- &discovery.DiscoveryResponse{VersionInfo: tc.version, TypeUrl: policypb.TypeURL, Resources: tc.resources, Nonce: nonce}
			r := recv(t, f.replies, "reply")
			if r.nonce != nonce {
				t.Errorf("reply nonce %q, want %q", r.nonce, nonce)
			}
			if r.version != tc.inForce {
				t.Errorf("reply version_info %q, want %q", r.version, tc.inForce)
			}
			if tc.nack == "" && r.errMsg != "" {
				t.Fatalf("NACK %q, want an ACK", r.errMsg)
			}
			if tc.nack != "" && (!strings.Contains(r.errMsg, tc.nack) || r.errCode != int32(codes.InvalidArgument)) {
				t.Fatalf("NACK %d %q, want INVALID_ARGUMENT with %q", r.errCode, r.errMsg, tc.nack)
			}
			if c.Version() != tc.inForce {
				t.Fatalf("version in force %q, want %q", c.Version(), tc.inForce)
			}
		})
	}
	if got := len(applied); got != 2 {
		t.Errorf("Apply accepted %d policies, want 2 (same version again is not re-applied)", got)
	}
}

// TestResponsesDelta: the delta variant; the version is
// system_version_info and a removal keeps the policy in force.
func TestResponsesDelta(t *testing.T) {
	f, addr := startFake(t)
	applied := make(chan string, 16)
	c := runClient(t, xdsclient.Options{ServerAddr: addr, NodeID: "n1", Delta: true, Apply: apply(applied)})
	first := recv(t, f.firstD, "subscription")
	if first.GetNode().GetId() != "n1" || first.GetTypeUrl() != policypb.TypeURL ||
		len(first.GetResourceNamesSubscribe()) != 1 || first.GetResourceNamesSubscribe()[0] != "default" {
		t.Fatalf("subscription %v", first)
	}
	res := func(name string, p *policypb.Policy) []*discovery.Resource {
		return []*discovery.Resource{{Name: name, Version: "hash", Resource: packed(t, p)}}
	}
	cases := []struct {
		name      string
		version   string
		resources []*discovery.Resource
		removed   []string
		nack      string
		inForce   string
	}{
		{"first policy", "1", res("default", testPolicy("acme")), nil, "", "1"},
		{"apply refuses", "2", res("default", testPolicy("refused")), nil, "policy 2 was not applied", "1"},
		{"other resource only", "2", res("other", testPolicy("globex")), nil, "", "1"},
		{"removed", "2", nil, []string{"default"}, "", "1"},
		{"next good policy", "3", res("default", testPolicy("acme", "globex")), nil, "", "3"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nonce := fmt.Sprint(i + 1)
			f.sendD <- &discovery.DeltaDiscoveryResponse{SystemVersionInfo: tc.version, TypeUrl: policypb.TypeURL,
				Resources: tc.resources, RemovedResources: tc.removed, Nonce: nonce}
			r := recv(t, f.replies, "reply")
			if r.nonce != nonce {
				t.Errorf("reply nonce %q, want %q", r.nonce, nonce)
			}
			if (tc.nack == "") != (r.errMsg == "") || !strings.Contains(r.errMsg, tc.nack) {
				t.Fatalf("reply error %q, want %q", r.errMsg, tc.nack)
			}
			if c.Version() != tc.inForce {
				t.Fatalf("version in force %q, want %q", c.Version(), tc.inForce)
			}
		})
	}
}

// TestCorruptCache: a cache file that is not a good policy is ignored with
// a log line and nothing is applied.
func TestCorruptCache(t *testing.T) {
	good, err := policypb.MarshalJSON(testPolicy("acme"))
	if err != nil {
		t.Fatal(err)
	}
	invalid, err := policypb.MarshalJSON(&policypb.Policy{Tenants: []*policypb.Tenant{{Id: "Not An Id", Credentials: []string{verifier}}}})
	if err != nil {
		t.Fatal(err)
	}
	refused, err := policypb.MarshalJSON(testPolicy("refused"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, content, want string
	}{
		{"garbage", "\x00\x01garbage", "not a policy cache file"},
		{"truncated", `{"version": "1", "policy": ` + string(good[:len(good)/2]), "not a policy cache file"},
		{"empty", "", "not a policy cache file"},
		{"unknown field", `{"version": "1", "policy": ` + string(good) + `, "extra": 1}`, "not a policy cache file"},
		{"no version", `{"policy": ` + string(good) + `}`, "no version"},
		{"policy not protojson", `{"version": "1", "policy": {"tenant": []}}`, "tenant: unknown field"},
		{"invalid policy", `{"version": "1", "policy": ` + string(invalid) + `}`, "invalid policy: tenants[0].id"},
		{"policy the data plane refuses", `{"version": "1", "policy": ` + string(refused) + `}`, "tenant refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policy.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			logs := &logBuffer{}
			applied := make(chan string, 1)
			c := runClient(t, xdsclient.Options{
				ServerAddr: unreachable(t), NodeID: "n1", CacheFile: path, Apply: apply(applied),
				Logger: slog.New(slog.NewTextHandler(logs, nil)),
			})
			harness.Eventually(t, waitFor, func() error {
				if !strings.Contains(logs.String(), "ignoring the cached policy") {
					return fmt.Errorf("no log line yet:\n%s", logs.String())
				}
				return nil
			})
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log does not say %q:\n%s", tc.want, logs.String())
			}
			if len(applied) != 0 || c.Version() != "" {
				t.Fatalf("applied %q from a bad cache file", c.Version())
			}
			select {
			case <-c.Ready():
				t.Fatal("Ready with a bad cache file and no control plane")
			default:
			}
		})
	}
}

// TestRunRefusesConfig: what Run cannot work with fails at once.
func TestRunRefusesConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts xdsclient.Options
		want string
	}{
		{"no apply", xdsclient.Options{ServerAddr: "127.0.0.1:1"}, "Apply is nil"},
		{"no server", xdsclient.Options{Apply: func(string, *policypb.Policy) error { return nil }}, "ServerAddr is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := xdsclient.New(tc.opts).Run(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want %q", err, tc.want)
			}
		})
	}
}

// unreachable is an address where nothing listens.
func unreachable(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// logBuffer is a bytes.Buffer safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
