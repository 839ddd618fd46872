package benchkit

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

// Table is a header and rows of cells; the first Left columns are labels
// (left-aligned in markdown), the rest numbers.
type Table struct {
	Left   int
	Header []string
	Rows   [][]string
}

// Report is everything a benchmark prints at the end: a description of the
// set-up, tables and notes.
type Report struct {
	Setup  string
	Tables []Table
	Notes  []string
}

// Write prints the report and, if path is set, also writes it as markdown.
func (rep *Report) Write(path string) error {
	fmt.Print(rep.Text())
	if path == "" {
		return nil
	}
	if err := os.WriteFile(path, []byte(rep.Markdown()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	Logf("wrote %s", path)
	return nil
}

// Text renders the report as aligned plain text.
func (rep *Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n\n", rep.Setup)
	for _, t := range rep.Tables {
		w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, cells := range append([][]string{t.Header}, t.Rows...) {
			fmt.Fprintln(w, strings.Join(cells, "\t")+"\t")
		}
		w.Flush()
		b.WriteString("\n")
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(&b, n)
	}
	return b.String()
}

// Markdown renders the report as GitHub-flavoured markdown; each line of
// the set-up becomes a paragraph.
func (rep *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", strings.ReplaceAll(rep.Setup, "\n", "\n\n"))
	for _, t := range rep.Tables {
		// Labels left-aligned, numbers right-aligned.
		fmt.Fprintf(&b, "| %s |\n|%s%s\n", strings.Join(t.Header, " | "),
			strings.Repeat(" :--- |", t.Left), strings.Repeat(" ---: |", len(t.Header)-t.Left))
		for _, cells := range t.Rows {
			fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
		}
		b.WriteString("\n")
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "%s\n\n", n)
	}
	return b.String()
}

// Num formats v, or "n/a" for zero (not measured).
func Num(v float64, format string) string {
	if v == 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

// Ratio formats a/b, or "n/a" if either is missing.
func Ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// Median of a non-empty slice.
func Median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// MsPer1k is CPU milliseconds per 1,000 operations for ticks clock ticks
// at hz ticks a second over n operations; 0 for no operations.
func MsPer1k(ticks, n int64, hz float64) float64 {
	if n == 0 {
		return 0
	}
	return float64(ticks) / hz * 1000 / float64(n) * 1000
}
