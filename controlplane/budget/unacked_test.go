package budget

import (
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// fakeNode is a sidecar attached to the Server without a stream: its
// Shares queue on out and its reports go through take.
func fakeNode(s *Server, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes[id] = &node{id: id, stream: 1, live: true, granted: map[string]int{}, out: make(chan *policypb.Shares, 1)}
}

// sent takes the Shares queued for id: it is on the wire, not yet applied.
func sent(t *testing.T, s *Server, id string) *policypb.Shares {
	t.Helper()
	s.mu.Lock()
	ch := s.nodes[id].out
	s.mu.Unlock()
	select {
	case sh := <-ch:
		return sh
	default:
		t.Fatalf("nothing queued for %s", id)
		return nil
	}
}

func report(t *testing.T, s *Server, id string, applied uint64, share, demand int) {
	t.Helper()
	if err := s.take(id, 1, &policypb.LoadReport{AppliedSeq: applied, Clusters: []*policypb.ClusterLoad{
		{Cluster: "main", Share: int32(share), Held: int32(max(share, 0)), Active: int32(min(demand, max(share, 0))), Waiting: int32(max(demand-max(share, 0), 0))},
	}}); err != nil {
		t.Fatal(err)
	}
}

func grantOf(sh *policypb.Shares) int {
	for _, c := range sh.GetClusters() {
		if c.GetCluster() == "main" {
			return int(c.GetShare())
		}
	}
	return -1
}

// TestUnackedGrowthCounts: a growth sent to a sidecar and then replaced by
// a shrink before the sidecar acknowledged either may still be applied
// last (the shrink lost with a stream, or the control plane gone), so
// the sidecar is counted at the growth until it acknowledges the shrink:
// the other sidecar's growth waits for that, and the shares in force
// never sum past the budget.
func TestUnackedGrowthCounts(t *testing.T) {
	s := New(Options{})
	s.SetPolicy(&policypb.Policy{Clusters: []*policypb.Cluster{{Name: "main",
		Postgres: &policypb.PostgresCluster{MaxServerConnections: 4, MinPerSidecar: 1}}}})
	now := time.Now().Add(time.Hour) // past the start's hold
	fakeNode(s, "a")
	fakeNode(s, "b")
	// Both start at 2 and apply it.
	report(t, s, "a", 0, -1, 2)
	report(t, s, "b", 0, -1, 2)
	s.recompute(now)
	shA, shB := sent(t, s, "a"), sent(t, s, "b")
	if grantOf(shA) != 2 || grantOf(shB) != 2 {
		t.Fatalf("first grants a %d, b %d; want 2 each", grantOf(shA), grantOf(shB))
	}
	report(t, s, "a", shA.GetSeq(), 2, 2)
	report(t, s, "b", shB.GetSeq(), 2, 2)

	// a gets busy: b shrinks to 1 and, once b applied it, a grows to 3.
	report(t, s, "a", shA.GetSeq(), 2, 4)
	report(t, s, "b", shB.GetSeq(), 2, 0)
	s.recompute(now)
	shB = sent(t, s, "b")
	if grantOf(shB) != 1 {
		t.Fatalf("b's shrink: %d", grantOf(shB))
	}
	report(t, s, "b", shB.GetSeq(), 1, 0)
	s.recompute(now)
	growth := sent(t, s, "a")
	if grantOf(growth) != 3 {
		t.Fatalf("a's growth: %d", grantOf(growth))
	}

	// Before a acknowledges its growth the load turns: a shrinks to 1,
	// and b's growth must not be granted yet — the growth to 3 may be
	// the last a applies.
	report(t, s, "a", shA.GetSeq(), 2, 0)
	report(t, s, "b", shB.GetSeq(), 1, 4)
	s.recompute(now)
	shrink := sent(t, s, "a")
	if grantOf(shrink) != 1 {
		t.Fatalf("a's shrink: %d", grantOf(shrink))
	}
	// a reports again, still at 2: neither Shares has arrived yet.
	report(t, s, "a", shA.GetSeq(), 2, 0)
	s.recompute(now)
	s.mu.Lock()
	bGrant := s.nodes["b"].granted["main"]
	s.mu.Unlock()
	if bGrant+3 > 4 {
		t.Fatalf("b granted %d while a's growth to 3 is unacknowledged: %d in force if a applies it last, budget 4", bGrant, bGrant+3)
	}
	// a acknowledging only the growth still holds b back.
	report(t, s, "a", growth.GetSeq(), 3, 0)
	s.recompute(now)
	s.mu.Lock()
	bGrant = s.nodes["b"].granted["main"]
	s.mu.Unlock()
	if bGrant != 1 {
		t.Fatalf("b granted %d while a holds 3", bGrant)
	}
	// Once a acknowledges the shrink, b grows to 3.
	report(t, s, "a", shrink.GetSeq(), 1, 0)
	s.recompute(now)
	if g := grantOf(sent(t, s, "b")); g != 3 {
		t.Fatalf("b's growth after a's shrink was acknowledged: %d, want 3", g)
	}
}
