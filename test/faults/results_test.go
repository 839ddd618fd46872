package faults

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The figures the tests log as "RESULT …" are also kept, and with
// TG_FAULTS_RESULTS=FILE written to FILE as markdown tables at the end of
// the run (one table per group, rows in the order the tests ran), for
// `bash bench/all.sh faults soak` to put into bench/RESULTS.md with
// bench/results (a relative FILE is taken from test/faults, where go test
// runs the tests). They are functional figures: the tests assert bounds,
// never speed.
var figures struct {
	mu     sync.Mutex
	groups []string               // in the order first seen
	rows   map[string][][3]string // group -> (what, figure, test)
}

// The results tables.
const (
	groupUpstream = "Upstream faults"
	groupDrain    = "Drain"
	groupConns    = "Connections"
	groupHostile  = "Hostile clients (functional figures; the quiet tenant's p99 under each is bench/hostile's section)"
	groupSoak     = "Soak"
)

// result logs a figure and keeps it for the results table: group is the
// table (e.g. "Upstream faults"), what the row, value the figure.
func result(t *testing.T, group, what, format string, args ...any) {
	t.Helper()
	value := fmt.Sprintf(format, args...)
	t.Logf("RESULT %s: %s: %s", group, what, value)
	figures.mu.Lock()
	defer figures.mu.Unlock()
	if figures.rows == nil {
		figures.rows = map[string][][3]string{}
	}
	if _, ok := figures.rows[group]; !ok {
		figures.groups = append(figures.groups, group)
	}
	figures.rows[group] = append(figures.rows[group], [3]string{what, value, t.Name()})
}

// writeFigures writes the figures kept as markdown to path; failed (the
// run failed) puts a warning above them.
func writeFigures(path string, failed bool) error {
	figures.mu.Lock()
	defer figures.mu.Unlock()
	var b strings.Builder
	if failed {
		b.WriteString("**The run failed** (see the test log): the figures below include a failing test's.\n\n")
	}
	if len(figures.groups) == 0 {
		b.WriteString("No figures: no test that records one ran.\n")
	}
	// The order, whichever test ran first.
	order := map[string]int{groupUpstream: 1, groupDrain: 2, groupConns: 3, groupHostile: 4, groupSoak: 5}
	slices.SortStableFunc(figures.groups, func(a, b string) int { return order[a] - order[b] })
	for _, g := range figures.groups {
		fmt.Fprintf(&b, "### %s\n\n| | figure | test |\n|---|---|---|\n", g)
		for _, r := range figures.rows[g] {
			fmt.Fprintf(&b, "| %s | %s | `%s` |\n", cell(r[0]), cell(r[1]), r[2])
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// cell escapes a table cell's pipes.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
