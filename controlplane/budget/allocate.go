// Package budget splits each PostgreSQL cluster's fleet-wide budget of
// server connections (the policy's clusters[].postgres.max_server_connections)
// among the sidecars connected to the control plane, and keeps the sum of
// what they may hold at or under the budget while shares move.
//
// Every sidecar reports, per budgeted cluster, the share in force, the
// connections it holds, how many of them are busy and how many clients
// wait (policypb.LoadReport). A sidecar is counted at what it may hold
// now: the most of its last grant, the grants it has not acknowledged yet
// (LoadReport.applied_seq), the share it last reported in force and the
// connections it reported (its commitment). Targets are a fair split
// of the budget: each sidecar its minimum, the rest first to sidecars by
// demand (busy plus waiting, max-min fair), then evenly. A target below a
// sidecar's commitment is granted at once (a shrink); a target above it
// only out of the headroom the commitments leave (a growth), so a growth
// is granted only once the shrinks that make room for it are reported
// done. A sidecar that vanished keeps its commitment for ReclaimAfter
// (its connections may still be open); one that said it was leaving with
// nothing held is dropped at once.
package budget

import (
	"slices"
)

// nodeLoad is what the allocator knows of one sidecar for one cluster.
type nodeLoad struct {
	id      string
	granted int // last share granted; 0 before any
	// inFlight is the most of the grants sent and not yet acknowledged
	// (an earlier one may still be applied after a later, smaller one was
	// decided); 0 if none.
	inFlight int
	share    int // share in force as reported; -1 none or unknown
	held     int
	demand   int // busy plus waiting
	live     bool
}

// commitment is the most connections the sidecar may hold now.
func (n nodeLoad) commitment() int { return max(n.granted, n.inFlight, n.share, n.held, 0) }

// allocate returns the new grant of every live node for a cluster with
// budget total and minimum minEach, given the nodes' loads (live and
// reclaiming ones); growth is held back while hold is set (a control
// plane that has just started and not heard from the whole fleet yet).
func allocate(total, minEach int, nodes []nodeLoad, hold bool) map[string]int {
	if minEach <= 0 {
		minEach = 1
	}
	var live []nodeLoad
	reserved, committed := 0, 0
	for _, n := range nodes {
		committed += n.commitment()
		if n.live {
			live = append(live, n)
		} else {
			reserved += n.commitment()
		}
	}
	slices.SortFunc(live, func(a, b nodeLoad) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	targets := fairSplit(total-reserved, minEach, live)
	headroom := total - committed
	if hold {
		headroom = 0
	}
	out := make(map[string]int, len(live))
	// Shrinks first: they free nothing until reported, but must not wait
	// for the growths.
	for i, n := range live {
		if t := targets[i]; t <= n.commitment() {
			out[n.id] = t
		}
	}
	for i, n := range live {
		t, c := targets[i], n.commitment()
		if t <= c {
			continue
		}
		inc := min(t-c, max(headroom, 0))
		headroom -= inc
		out[n.id] = c + inc
	}
	return out
}

// fairSplit divides avail among nodes (sorted): each its minimum (or an
// equal part of avail when the minimums do not fit), then the rest by
// demand beyond the minimum, max-min fair, then what is left evenly.
func fairSplit(avail, minEach int, nodes []nodeLoad) []int {
	n := len(nodes)
	out := make([]int, n)
	if n == 0 || avail <= 0 {
		return out
	}
	if n*minEach > avail {
		for i := range out {
			out[i] = avail / n
			if i < avail%n {
				out[i]++
			}
		}
		return out
	}
	rest := avail - n*minEach
	want := make([]int, n)
	for i, nd := range nodes {
		out[i] = minEach
		want[i] = max(nd.demand-minEach, 0)
	}
	for rest > 0 {
		hungry := 0
		for i := range want {
			if want[i] > 0 {
				hungry++
			}
		}
		if hungry == 0 {
			break
		}
		each := max(rest/hungry, 1)
		for i := range want {
			if want[i] == 0 || rest == 0 {
				continue
			}
			g := min(each, want[i], rest)
			out[i] += g
			want[i] -= g
			rest -= g
		}
	}
	for i := range out {
		out[i] += rest / n
		if i < rest%n {
			out[i]++
		}
	}
	return out
}
