package budget

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func live(id string, granted, share, held, demand int) nodeLoad {
	return nodeLoad{id: id, granted: granted, share: share, held: held, demand: demand, live: true}
}

// TestAllocate: fair shares with a minimum, more to the busy, growth only
// out of headroom the others' commitments leave.
func TestAllocate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		total   int
		min     int
		nodes   []nodeLoad
		hold    bool
		want    map[string]int
		comment string
	}{
		{"idle fleet splits evenly", 10, 1, []nodeLoad{live("a", 5, 5, 0, 0), live("b", 5, 5, 0, 0)}, false, map[string]int{"a": 5, "b": 5}, ""},
		{"newcomer waits for the shrink", 10, 1, []nodeLoad{live("a", 10, 10, 3, 0), live("b", 0, -1, 0, 0)}, false, map[string]int{"a": 5, "b": 0}, "a must report its shrink first"},
		{"newcomer grows once a reported it", 10, 1, []nodeLoad{live("a", 5, 5, 3, 0), live("b", 0, 0, 0, 0)}, false, map[string]int{"a": 5, "b": 5}, ""},
		{"busy gets more, once the idle one shrank", 10, 1, []nodeLoad{live("a", 5, 5, 5, 9), live("b", 5, 5, 0, 0)}, false, map[string]int{"a": 5, "b": 1}, "b's shrink is not reported yet"},
		{"busy gets more", 10, 1, []nodeLoad{live("a", 5, 5, 5, 9), live("b", 1, 1, 0, 0)}, false, map[string]int{"a": 9, "b": 1}, ""},
		{"both busy: fair", 10, 1, []nodeLoad{live("a", 5, 5, 5, 20), live("b", 5, 5, 5, 20)}, false, map[string]int{"a": 5, "b": 5}, ""},
		{"minimum does not fit", 3, 2, []nodeLoad{live("a", 0, 0, 0, 0), live("b", 0, 0, 0, 0), live("c", 0, 0, 0, 0), live("d", 0, 0, 0, 0)}, false, map[string]int{"a": 1, "b": 1, "c": 1, "d": 0}, ""},
		{"gone sidecar keeps its commitment", 10, 1, []nodeLoad{live("a", 5, 5, 1, 0), {id: "b", granted: 5, share: 5, held: 4}}, false, map[string]int{"a": 5}, ""},
		{"holding back after a start", 10, 1, []nodeLoad{live("a", 0, 4, 4, 0), live("b", 0, 0, 0, 0)}, true, map[string]int{"a": 4, "b": 0}, "a's 4 are kept, nothing new is granted"},
		{"budget lowered: everyone shrinks", 4, 1, []nodeLoad{live("a", 5, 5, 5, 5), live("b", 5, 5, 5, 5)}, false, map[string]int{"a": 2, "b": 2}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := allocate(tc.total, tc.min, tc.nodes, tc.hold)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("allocate = %v, want %v %s", got, tc.want, tc.comment)
			}
		})
	}
}

// TestAllocateNeverOverCommits: whatever the fleet reports, if what every
// sidecar may hold fits the budget before a round of grants, it still fits
// after (a sidecar may hold up to the most of its grant, its share in
// force and what it holds); and a quiet fleet converges to its targets.
func TestAllocateNeverOverCommits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 2000 {
		total := 1 + rng.IntN(60)
		var nodes []nodeLoad
		sum := 0
		for i := range 1 + rng.IntN(20) {
			n := nodeLoad{id: fmt.Sprintf("n%02d", i), share: -1, live: rng.IntN(5) > 0, demand: rng.IntN(10)}
			if rng.IntN(3) > 0 {
				n.granted = rng.IntN(total/2 + 1)
				n.share = n.granted
				if rng.IntN(2) == 0 { // a shrink not yet applied
					n.share += rng.IntN(3)
				}
				n.held = rng.IntN(n.share + 1)
			}
			if sum+n.commitment() > total {
				continue
			}
			sum += n.commitment()
			nodes = append(nodes, n)
		}
		grants := allocate(total, 1+rng.IntN(2), nodes, rng.IntN(4) == 0)
		after := 0
		for _, n := range nodes {
			if g, ok := grants[n.id]; ok {
				n.granted = g
			}
			after += n.commitment()
		}
		if after > total {
			t.Fatalf("round %d: commitments %d over the budget %d after granting %v to %+v", round, after, total, grants, nodes)
		}
	}
}
