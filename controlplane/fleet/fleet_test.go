package fleet

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type localNodes map[string]xds.NodeStatus

func (l localNodes) NodeStatus() map[string]xds.NodeStatus {
	out := make(map[string]xds.NodeStatus, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

// memStore is the store's fleet table in memory, for this package's unit
// tests (the store's own test runs it against PostgreSQL).
type memStore struct {
	mu        sync.Mutex
	rows      map[string][]store.FleetNode
	published chan string
	fail      error
}

func newMemStore() *memStore {
	return &memStore{rows: map[string][]store.FleetNode{}, published: make(chan string, 100)}
}

func (m *memStore) PublishFleet(_ context.Context, instance string, nodes []store.FleetNode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.rows[instance] = nodes
	select {
	case m.published <- instance:
	default:
	}
	return nil
}

func (m *memStore) WithdrawFleet(_ context.Context, instance string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.rows, instance)
	return nil
}

func (m *memStore) Fleet(_ context.Context, except string, _ time.Duration) ([]store.FleetNode, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.FleetNode
	for inst, nodes := range m.rows {
		if inst == except {
			continue
		}
		for _, n := range nodes {
			n.Instance = inst
			out = append(out, n)
		}
	}
	return out, nil
}

func (m *memStore) instances() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for k := range m.rows {
		out = append(out, k)
	}
	return out
}

// TestViewMerges: an instance sees its own nodes and the other instance's;
// a node on both (it moved) counts the newer of what it accepted and
// rejected, and its streams on both.
func TestViewMerges(t *testing.T) {
	st := newMemStore()
	t0 := time.Now()
	a := New(localNodes{
		"sidecar-1": {Streams: 1, Policy: true, AckedVersion: "9", LastAck: t0},
		"sidecar-2": {Streams: 0, Policy: true, AckedVersion: "4", LastAck: t0.Add(-time.Hour)},
	}, st, Options{Instance: "a"})
	b := New(localNodes{
		"sidecar-2": {Streams: 1, Policy: true, AckedVersion: "10", LastAck: t0.Add(-time.Minute), NackedVersion: "11", LastNack: t0, LastError: "bad table"},
		"sidecar-3": {Streams: 1, Policy: true, AckedVersion: "10", LastAck: t0},
	}, st, Options{Instance: "b"})
	ctx := context.Background()
	if a.Ready() {
		t.Fatal("ready before reading the other instances")
	}
	if err := b.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !a.Ready() {
		t.Fatal("not ready after a sync")
	}
	got := a.NodeStatus()
	if len(got) != 3 {
		t.Fatalf("a sees %d nodes, want 3: %+v", len(got), got)
	}
	if s := got["sidecar-1"]; s.AckedVersion != "9" || s.Streams != 1 {
		t.Errorf("sidecar-1 (a's own) = %+v", s)
	}
	if s := got["sidecar-2"]; s.AckedVersion != "10" || s.NackedVersion != "11" || s.LastError != "bad table" || s.Streams != 1 {
		t.Errorf("sidecar-2 (moved from a to b) = %+v, want b's newer versions, 1 stream", s)
	}
	if s := got["sidecar-3"]; s.AckedVersion != "10" || !s.Policy {
		t.Errorf("sidecar-3 (b's) = %+v", s)
	}
	// b has not read a's yet: it sees its own only.
	if got := b.NodeStatus(); len(got) != 2 {
		t.Errorf("b before reading a sees %+v", got)
	}
}

func TestNewer(t *testing.T) {
	t0 := time.Now()
	for _, c := range []struct {
		a      string
		ta     time.Time
		b      string
		tb     time.Time
		newer  bool
		reason string
	}{
		{"10", t0.Add(-time.Hour), "9", t0, true, "by number, not time"},
		{"9", t0, "10", t0.Add(-time.Hour), false, "by number, not time"},
		{"9", t0, "", time.Time{}, true, "anything is newer than nothing"},
		{"", time.Time{}, "9", t0, false, "nothing is not newer"},
		{"v2", t0, "v1", t0.Add(-time.Second), true, "by time when not numbers"},
		{"7", t0, "7", t0.Add(-time.Second), true, "same version: the later"},
	} {
		if got := newer(c.a, c.ta, c.b, c.tb); got != c.newer {
			t.Errorf("newer(%q, %q) = %v (%s)", c.a, c.b, got, c.reason)
		}
	}
}

// TestRunPublishesAndWithdraws: Run publishes until its context ends, then
// withdraws the instance's rows; a store that fails leaves the view not
// ready rather than showing this instance's nodes as the whole fleet.
func TestRunPublishesAndWithdraws(t *testing.T) {
	st := newMemStore()
	v := New(localNodes{"sidecar-1": {Streams: 1, Policy: true}}, st, Options{Instance: "a", Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	for range 2 {
		select {
		case <-st.published:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not publish")
		}
	}
	if !v.Ready() {
		t.Error("not ready after publishing")
	}
	cancel()
	<-done
	if got := st.instances(); len(got) != 0 {
		t.Fatalf("rows left after Run ended: %v", got)
	}

	failing := newMemStore()
	failing.fail = errors.New("store down")
	v = New(localNodes{"sidecar-1": {Streams: 1, Policy: true}}, failing, Options{Instance: "a", Interval: 10 * time.Millisecond})
	if err := v.sync(context.Background()); err == nil {
		t.Fatal("sync with a failing store: no error")
	}
	if v.Ready() {
		t.Fatal("ready although the other instances were never read")
	}
}
