package xds_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait of these tests; they end far sooner.
const waitFor = 15 * time.Second

// verifier is the SCRAM-SHA-256 verifier of "acme-secret-1".
const verifier = "SCRAM-SHA-256$4096:OLopLdLn2iIXV2xKEo1XcA==$//3M5CupSzKX1w6u8HiK635fFImcH0okPkDYYZHP8jQ=:ZiWR3X/MmfuYovCcz0sGV9woCQm3U1q95TjeelpKh+A="

// testPolicy is a valid policy; n makes each one different.
func testPolicy(n int) *policypb.Policy {
	return &policypb.Policy{
		Tenants: []*policypb.Tenant{
			{Id: "acme", Credentials: []string{verifier}, Limits: &policypb.Limits{MaxConnections: int32(n)}},
			{Id: "globex", Credentials: []string{verifier}},
		},
		Tables: []*policypb.Table{{Name: "public.orders", TenantColumn: "tenant_id"}},
	}
}

// brokenTenant names the tenant that the test data planes' Apply refuses:
// a policy that passes Validate but not the data plane's compiler.
const brokenTenant = "broken"

// brokenPolicy passes policypb.Validate but testApply refuses it.
func brokenPolicy() *policypb.Policy {
	p := testPolicy(0)
	p.Tenants = append(p.Tenants, &policypb.Tenant{Id: brokenTenant, Credentials: []string{verifier}})
	return p
}

// testApply refuses brokenPolicy.
func testApply(p *policypb.Policy) error {
	for _, t := range p.GetTenants() {
		if t.GetId() == brokenTenant {
			return fmt.Errorf("tenant %s: the data plane cannot compile it", brokenTenant)
		}
	}
	return nil
}

// controlPlane is an xds.Server on a real gRPC server on loopback TCP.
type controlPlane struct {
	*xds.Server
	addr string
	reg  *prometheus.Registry
	grpc *grpc.Server
	once sync.Once
}

// startControlPlane serves a new xds.Server on addr ("" picks a port); it
// is stopped when the test ends, if it was not before.
func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{addr: lis.Addr().String(), reg: prometheus.NewRegistry()}
	cp.Server = xds.New(xds.Options{Logger: testLogger(t, "control plane"), Registerer: cp.reg})
	cp.grpc = grpc.NewServer(xds.ServerOptions()...)
	cp.Register(cp.grpc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cp.grpc.Serve(lis)
	}()
	t.Cleanup(func() { cp.stop(); <-done })
	return cp
}

// stop stops the gRPC server at once, as a crashed control plane would
// (open streams break).
func (cp *controlPlane) stop() {
	cp.once.Do(func() { cp.Close(); cp.grpc.Stop() })
}

// waitStatus waits until the node's status satisfies ok.
func (cp *controlPlane) waitStatus(t *testing.T, node string, what string, ok func(xds.NodeStatus) bool) xds.NodeStatus {
	t.Helper()
	var st xds.NodeStatus
	harness.Eventually(t, waitFor, func() error {
		var found bool
		st, found = cp.NodeStatus()[node]
		if !found || !ok(st) {
			return fmt.Errorf("node %s: want %s, status %+v (found %v)", node, what, st, found)
		}
		return nil
	})
	return st
}

// waitAcked waits until node ACKs version.
func (cp *controlPlane) waitAcked(t *testing.T, node, version string) {
	t.Helper()
	cp.waitStatus(t, node, "ACK of "+version, func(st xds.NodeStatus) bool { return st.AckedVersion == version })
}

// dataPlane is an xdsclient.Client with an Apply that records what it was
// given on a channel.
type dataPlane struct {
	*xdsclient.Client
	reg     *prometheus.Registry
	applied chan string // versions Apply accepted
	refused chan string // versions Apply refused
	stop    context.CancelFunc
	done    chan error
}

// startDataPlane runs a client of addr until the test ends (or stop).
func startDataPlane(t *testing.T, addr, node string, delta bool, cacheFile string) *dataPlane {
	t.Helper()
	return startDataPlaneWith(t, addr, node, delta, cacheFile, nil)
}

// startDataPlaneWith is startDataPlane with its options adjusted by edit.
func startDataPlaneWith(t *testing.T, addr, node string, delta bool, cacheFile string, edit func(*xdsclient.Options)) *dataPlane {
	t.Helper()
	dp := &dataPlane{reg: prometheus.NewRegistry(), applied: make(chan string, 256), refused: make(chan string, 256), done: make(chan error, 1)}
	opts := xdsclient.Options{
		ServerAddr: addr, NodeID: node, Cluster: "test", Delta: delta, CacheFile: cacheFile,
		Apply: func(version string, p *policypb.Policy) error {
			if err := testApply(p); err != nil {
				dp.refused <- version
				return err
			}
			dp.applied <- version
			return nil
		},
		// Short waits: the tests restart the control plane.
		Backoff:    xdsclient.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:     testLogger(t, node),
		Registerer: dp.reg,
	}
	if edit != nil {
		edit(&opts)
	}
	dp.Client = xdsclient.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	dp.stop = cancel
	go func() { dp.done <- dp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-dp.done; err != nil {
			t.Errorf("%s: Run: %v", node, err)
		}
	})
	return dp
}

// waitApplied waits until Apply accepts version, skipping earlier ones.
func (dp *dataPlane) waitApplied(t *testing.T, version string) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case v := <-dp.applied:
			if v == version {
				return
			}
		case <-timeout:
			t.Fatalf("version %s not applied after %s (in force: %q)", version, waitFor, dp.Version())
		}
	}
}

// metric returns the value of a counter or gauge in reg, 0 if absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				switch {
				case m.GetCounter() != nil:
					return m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// hasLabels reports whether m has every name=value pair of kv.
func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// testLogger logs to a buffer that is printed if the test fails.
func testLogger(t *testing.T, who string) *slog.Logger {
	w := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", who, w.String())
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
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

// protocols are the two xDS variants every end-to-end test runs with.
var protocols = []struct {
	name  string
	delta bool
}{{"sotw", false}, {"delta", true}}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
