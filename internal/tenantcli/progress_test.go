package tenantcli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
)

func view(state string, percent int, steps ...adminapi.StepView) adminapi.OperationView {
	return adminapi.OperationView{ID: "op-1", Kind: "offboard", Tenant: "acme", State: state, Percent: percent, Steps: steps}
}

func step(name, status string) adminapi.StepView {
	return adminapi.StepView{Name: name, Status: status}
}

// Off a terminal every step gets a line, even one that began and ended
// between two reads, and nothing is redrawn.
func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, false, 0)
	p.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	p.show(view("running", 0, step("suspend", "running"), step("count", "pending"), step("delete_rows", "pending")))
	p.show(view("running", 0, step("suspend", "running"), step("count", "pending"), step("delete_rows", "pending")))
	d := step("delete_rows", "running")
	d.Done, d.Total = 5, 40
	p.show(view("running", 50, step("suspend", "done"), step("count", "done"), d))
	d.Done = 10
	p.show(view("running", 60, step("suspend", "done"), step("count", "done"), d))
	p.show(view("succeeded", 100, step("suspend", "done"), step("count", "done"), step("delete_rows", "done")))
	p.done()
	want := `03:04:05 op-1 offboard acme   0% suspend running
03:04:05 op-1 offboard acme   0% running
03:04:05 op-1 offboard acme  50% suspend done
03:04:05 op-1 offboard acme  50% count done
03:04:05 op-1 offboard acme  50% delete_rows running 5/40
03:04:05 op-1 offboard acme  60% delete_rows running 10/40
03:04:05 op-1 offboard acme 100% delete_rows done
03:04:05 op-1 offboard acme 100% succeeded
`
	if got := out.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// On a terminal: one line redrawn in place with a bar, each ended step
// printed above it once, nothing wider than the terminal.
func TestProgressTerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, true, 60)
	s := step("delete_rows", "running")
	s.Message = strings.Repeat("x", 100)
	p.show(view("running", 0, step("suspend", "running"), step("delete_rows", "pending")))
	p.show(view("running", 50, step("suspend", "done"), s))
	p.show(view("running", 50, step("suspend", "done"), s))
	p.show(view("succeeded", 100, step("suspend", "done"), step("delete_rows", "done")))
	p.done()
	got := out.String()
	if n := strings.Count(got, "✓ suspend done"); n != 1 {
		t.Errorf("suspend's line printed %d times:\n%q", n, got)
	}
	if !strings.Contains(got, "✓ delete_rows done") || !strings.HasSuffix(got, "\n") {
		t.Errorf("end of the output: %q", got)
	}
	if !strings.Contains(got, "offboard acme  50% [##########----------] delete_rows runn…") {
		t.Errorf("no half-full bar of width 20:\n%q", got)
	}
	if !strings.Contains(got, "offboard acme 100% [####################] succeeded") {
		t.Errorf("no full bar:\n%q", got)
	}
	for _, part := range strings.FieldsFunc(got, func(r rune) bool { return r == '\r' || r == '\n' }) {
		part = strings.TrimPrefix(strings.TrimSuffix(part, "\x1b[K"), "\x1b[K")
		if n := len([]rune(part)); n > 59 {
			t.Errorf("line of %d columns on a terminal of 60: %q", n, part)
		}
	}
}
