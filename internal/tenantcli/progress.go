package tenantcli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
)

// progress shows an operation as it goes.
//
// On a terminal: one line redrawn in place ("\r", erase to the end of the
// line) with a bar of the operation's percent and its current step, and a
// line above it for each step that ends (done, failed, undone), so that
// the steps stay on the screen once the bar is gone.
//
// Otherwise (a pipe, a file, /dev/null): plain lines only, one for each
// change of a step's status or progress and of the operation's state, each
// with the time and the operation's id. A step that began and ended
// between two reads still gets its line.
type progress struct {
	out      io.Writer
	terminal bool
	width    int // the terminal's columns; 0: 80
	now      func() time.Time

	steps map[string]string // step name -> what was last shown of it
	state string            // operation state last shown
	drawn bool              // a bar is on the screen (terminal)
}

func newProgress(out io.Writer, terminal bool, width int) *progress {
	return &progress{out: out, terminal: terminal, width: width, now: time.Now, steps: map[string]string{}}
}

const minBar, maxBar = 10, 30

// current is the step running (or undoing), or nil.
func current(op adminapi.OperationView) *adminapi.StepView {
	for i := range op.Steps {
		switch op.Steps[i].Status {
		case "running", "undoing":
			return &op.Steps[i]
		}
	}
	return nil
}

// stepText is a step's status with its progress, message and error.
func stepText(s adminapi.StepView) string {
	d := s.Status
	if s.Total > 0 {
		d += fmt.Sprintf(" %d/%d", s.Done, s.Total)
	} else if s.Done > 0 {
		d += fmt.Sprintf(" %d", s.Done)
	}
	if s.Message != "" {
		d += ": " + s.Message
	}
	if s.Error != "" {
		if s.Status == "running" || s.Status == "undoing" {
			d += " (retrying after: " + s.Error + ")"
		} else {
			d += " (" + s.Error + ")"
		}
	}
	return d
}

// ended says a step's status is final for this run of the operation.
func ended(status string) bool {
	return status == "done" || status == "failed" || status == "undone"
}

func (p *progress) show(op adminapi.OperationView) {
	if p.terminal {
		p.showTerminal(op)
		return
	}
	stamp := p.now().UTC().Format("15:04:05")
	for _, s := range op.Steps {
		text := stepText(s)
		if prev, ok := p.steps[s.Name]; (ok && prev == text) || (!ok && s.Status == "pending") {
			continue
		}
		p.steps[s.Name] = text
		fmt.Fprintf(p.out, "%s %s %s %s %3d%% %s %s\n", stamp, op.ID, op.Kind, op.Tenant, op.Percent, s.Name, text)
	}
	if op.State != p.state {
		p.state = op.State
		fmt.Fprintf(p.out, "%s %s %s %s %3d%% %s\n", stamp, op.ID, op.Kind, op.Tenant, op.Percent, op.State)
	}
}

func (p *progress) showTerminal(op adminapi.OperationView) {
	width := p.width
	if width <= 0 {
		width = 80
	}
	// Steps that ended since the last redraw get a line of their own.
	for _, s := range op.Steps {
		if !ended(s.Status) || p.steps[s.Name] == s.Status {
			continue
		}
		p.steps[s.Name] = s.Status
		mark := "✓"
		if s.Status != "done" {
			mark = "✗"
		}
		line := fmt.Sprintf("%s %s %s", mark, s.Name, stepText(s))
		if s.StartedAt != nil && s.FinishedAt != nil {
			line += fmt.Sprintf(" (%s)", s.FinishedAt.Sub(*s.StartedAt).Round(time.Millisecond))
		}
		fmt.Fprintf(p.out, "\r\x1b[K%s\n", clip(line, width-1))
		p.drawn = false
	}
	desc := op.State
	if s := current(op); s != nil {
		desc = s.Name + " " + stepText(*s)
	}
	head := fmt.Sprintf("%s %s %3d%% ", op.Kind, op.Tenant, op.Percent)
	bar := width / 3
	bar = max(minBar, min(maxBar, bar))
	filled := max(0, min(bar, op.Percent*bar/100))
	line := head + "[" + strings.Repeat("#", filled) + strings.Repeat("-", bar-filled) + "] " + desc
	fmt.Fprintf(p.out, "\r%s\x1b[K", clip(line, width-1))
	p.drawn = true
}

// clip cuts s to n runes, marking the cut.
func clip(s string, n int) string {
	if n < 2 || utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// done ends the redrawn line.
func (p *progress) done() {
	if p.terminal && p.drawn {
		fmt.Fprintln(p.out)
		p.drawn = false
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
