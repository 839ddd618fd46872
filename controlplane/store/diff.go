package store

import (
	"fmt"
	"strings"
)

// Bounds of lineDiff. Myers' algorithm costs O((N+M)·D) time and, as
// written here, O(D²) memory, where D is the number of inserted and deleted
// lines; past these bounds the diff is replaced by a one-line summary rather
// than risking a quadratic blow-up on a huge policy.
const (
	maxDiffLines = 100_000 // lines (fit in int32) on both sides after trimming the common head and tail
	maxDiffEdits = 2_000   // inserted plus deleted lines: at most 2000²·4 bytes (16 MB) of trace
	diffContext  = 3       // unchanged lines around each hunk, as diff -u
)

// editKind is one line of an edit script.
type editKind byte

const (
	editEqual  editKind = ' '
	editDelete editKind = '-'
	editInsert editKind = '+'
)

type edit struct {
	kind editKind
	a, b int // line indices in the old (a) and new (b) texts; the one not used is -1
}

// unifiedDiff returns a unified diff (diff -u, three lines of context) of
// text a, labelled from, into text b, labelled to; "" when they are equal.
// When the texts are too large or too different for a bounded diff it
// returns a one-line summary starting with "diff omitted:".
func unifiedDiff(from, to, a, b string) string {
	if a == b {
		return ""
	}
	la, lb := splitLines(a), splitLines(b)
	script, ok := lineDiff(la, lb, maxDiffEdits)
	if !ok {
		return fmt.Sprintf("diff omitted: the texts are too large or too different for a bounded line diff (%d lines before, %d after; at most %d changed lines of %d are diffed)\n",
			len(la), len(lb), maxDiffEdits, maxDiffLines)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", from, to)
	for _, h := range hunks(script) {
		writeHunk(&out, h, la, lb)
	}
	return out.String()
}

// splitLines splits s into lines that keep their "\n"; a last line without
// one is marked the way diff marks it.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	} else {
		lines[len(lines)-1] += "\n\\ No newline at end of file\n"
	}
	return lines
}

// lineDiff returns a shortest edit script turning a into b (Myers, "An
// O(ND) Difference Algorithm and Its Variations", 1986), or false when it
// would exceed maxEdits edits or maxDiffLines lines.
func lineDiff(a, b []string, maxEdits int) ([]edit, bool) {
	// The common head and tail cost nothing to find and are most of a
	// typical policy change.
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	ma, mb := a[pre:len(a)-suf], b[pre:len(b)-suf]
	if len(ma)+len(mb) > maxDiffLines {
		return nil, false
	}
	mid, ok := myers(ma, mb, maxEdits)
	if !ok {
		return nil, false
	}
	script := make([]edit, 0, pre+len(mid)+suf)
	for i := range pre {
		script = append(script, edit{editEqual, i, i})
	}
	for _, e := range mid {
		if e.a >= 0 {
			e.a += pre
		}
		if e.b >= 0 {
			e.b += pre
		}
		script = append(script, e)
	}
	for i := range suf {
		script = append(script, edit{editEqual, len(a) - suf + i, len(b) - suf + i})
	}
	return script, true
}

// myers is the greedy forward algorithm with one V array per D kept for
// the backtrack: V_d covers diagonals -d..d, so the trace holds O(D²)
// integers.
func myers(a, b []string, maxEdits int) ([]edit, bool) {
	n, m := len(a), len(b)
	if n == 0 && m == 0 {
		return nil, true
	}
	limit := min(n+m, maxEdits)
	var trace [][]int32 // trace[d][k+d] is the furthest x on diagonal k after d edits
	final := -1
	for d := 0; d <= limit && final < 0; d++ {
		v := make([]int32, 2*d+1)
		for k := -d; k <= d; k += 2 {
			var x int
			switch {
			case d == 0:
				x = 0
			case k == -d || (k != d && trace[d-1][k-1+d-1] < trace[d-1][k+1+d-1]):
				x = int(trace[d-1][k+1+d-1]) // down: insert b[y-1]
			default:
				x = int(trace[d-1][k-1+d-1]) + 1 // right: delete a[x-1]
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			v[k+d] = int32(x)
			if x >= n && y >= m {
				final = d
			}
		}
		trace = append(trace, v)
	}
	if final < 0 {
		return nil, false
	}
	// Walk back from (n, m): each d undoes one snake and the edit before it.
	rev := make([]edit, 0, n+m)
	x, y := n, m
	for d := final; d > 0; d-- {
		prev := trace[d-1]
		k := x - y
		down := k == -d || (k != d && prev[k-1+d-1] < prev[k+1+d-1])
		pk := k - 1
		if down {
			pk = k + 1
		}
		px := int(prev[pk+d-1])
		py := px - pk
		mx, my := px+1, py // where the edit led, before the snake
		if down {
			mx, my = px, py+1
		}
		for x > mx && y > my {
			x--
			y--
			rev = append(rev, edit{editEqual, x, y})
		}
		if down {
			rev = append(rev, edit{editInsert, -1, py})
		} else {
			rev = append(rev, edit{editDelete, px, -1})
		}
		x, y = px, py
	}
	for x > 0 && y > 0 {
		x--
		y--
		rev = append(rev, edit{editEqual, x, y})
	}
	script := make([]edit, len(rev))
	for i, e := range rev {
		script[len(rev)-1-i] = e
	}
	return script, true
}

// hunks groups an edit script into hunks: runs of changes with up to
// diffContext equal lines around them, merged when their contexts touch.
func hunks(script []edit) [][]edit {
	var out [][]edit
	start, end := -1, -1 // the current hunk is script[start:end]
	for i, e := range script {
		if e.kind == editEqual {
			continue
		}
		lo := max(i-diffContext, 0)
		if start >= 0 && lo > end {
			out = append(out, script[start:end])
			start = -1
		}
		if start < 0 {
			start = lo
		}
		end = min(i+1+diffContext, len(script))
	}
	if start >= 0 {
		out = append(out, script[start:end])
	}
	return out
}

// writeHunk writes one hunk with its "@@ -l,s +l,s @@" header, numbered as
// GNU diff does: 1-based first line, the count omitted when it is 1, and an
// empty range numbered by the line before it.
func writeHunk(out *strings.Builder, h []edit, la, lb []string) {
	aStart, bStart := -1, -1
	var aCount, bCount int
	for _, e := range h {
		if e.a >= 0 {
			if aStart < 0 {
				aStart = e.a
			}
			aCount++
		}
		if e.b >= 0 {
			if bStart < 0 {
				bStart = e.b
			}
			bCount++
		}
	}
	// A side with no lines in a hunk is an empty text (any other change has
	// context around it), numbered 0 as diff does ("@@ -0,0 +1,3 @@").
	aStart, bStart = max(aStart, 0), max(bStart, 0)
	fmt.Fprintf(out, "@@ -%s +%s @@\n", hunkRange(aStart, aCount), hunkRange(bStart, bCount))
	for _, e := range h {
		switch e.kind {
		case editEqual:
			out.WriteString(" " + la[e.a])
		case editDelete:
			out.WriteString("-" + la[e.a])
		case editInsert:
			out.WriteString("+" + lb[e.b])
		}
	}
}

func hunkRange(start, count int) string {
	switch count {
	case 0:
		return fmt.Sprintf("%d,0", start)
	case 1:
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, count)
}
