package tenantcli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
)

// progress shows an operation as it goes: on a terminal one line redrawn
// in place ("\r", erase to the end), a bar of the operation's percent and
// its current step; otherwise one plain line each time the state, the
// step or its message changes.
type progress struct {
	out      io.Writer
	terminal bool
	last     string
	drawn    bool
}

const barWidth = 24

// current is the step running (or undoing), or the last one to change.
func current(op adminapi.OperationView) *adminapi.StepView {
	for i := range op.Steps {
		switch op.Steps[i].Status {
		case "running", "undoing":
			return &op.Steps[i]
		}
	}
	return nil
}

func describe(op adminapi.OperationView) string {
	s := current(op)
	if s == nil {
		return op.State
	}
	d := s.Name
	if s.Status == "undoing" {
		d = "undoing " + d
	}
	if s.Total > 0 {
		d += fmt.Sprintf(" %d/%d", s.Done, s.Total)
	} else if s.Done > 0 {
		d += fmt.Sprintf(" %d", s.Done)
	}
	if s.Message != "" {
		d += ": " + s.Message
	}
	if s.Error != "" {
		d += " (retrying: " + s.Error + ")"
	}
	return d
}

func (p *progress) show(op adminapi.OperationView) {
	desc := describe(op)
	if p.terminal {
		filled := op.Percent * barWidth / 100
		bar := strings.Repeat("█", filled) + strings.Repeat("░", barWidth-filled)
		line := fmt.Sprintf("%s %s %3d%% %s %s", op.Kind, op.Tenant, op.Percent, bar, desc)
		if r := []rune(line); len(r) > 120 {
			line = string(r[:119]) + "…"
		}
		fmt.Fprintf(p.out, "\r%s\x1b[K", line)
		p.drawn = true
		return
	}
	line := fmt.Sprintf("%s %s %s %d%% %s", op.ID, op.Kind, op.Tenant, op.Percent, desc)
	if line == p.last {
		return
	}
	p.last = line
	fmt.Fprintf(p.out, "%s %s\n", time.Now().UTC().Format("15:04:05"), line)
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
