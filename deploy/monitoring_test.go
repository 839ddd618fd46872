package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/test/deploycheck"
)

// TestPromQLParses: every expression of the alert rules and the
// dashboards (panels and variables) parses with Prometheus' own parser.
// (test/e2e checks the metric names against what the processes export.)
func TestPromQLParses(t *testing.T) {
	qs, err := deploycheck.Queries(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) < 50 {
		t.Fatalf("only %d queries found", len(qs))
	}
	for _, q := range qs {
		sels, err := deploycheck.Parse(q.Expr)
		if err != nil {
			t.Errorf("%s: %v\n  %s", q.Where, err, q.Expr)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("%s selects no metric: %s", q.Where, q.Expr)
		}
		for _, s := range sels {
			if s.Metric == "" {
				t.Errorf("%s: a selector without a metric name: %s", q.Where, q.Expr)
			}
		}
	}
}

// anchor is GitHub's anchor of a Markdown heading.
func anchor(heading string) string {
	h := strings.ToLower(strings.TrimSpace(heading))
	h = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(h, "")
	return strings.ReplaceAll(h, " ", "-")
}

// TestRunbooks: every alert has a severity, a summary, and a runbook_url
// pointing at a heading of deploy/README.md that carries its name and a
// paragraph.
func TestRunbooks(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{} // anchor → text under the heading
	var cur string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "#") {
			cur = anchor(strings.TrimLeft(line, "# "))
			sections[cur] = ""
			continue
		}
		if cur != "" {
			sections[cur] += line + "\n"
		}
	}
	rules, err := deploycheck.ReadRules(filepath.Join("prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			sev := r.Labels["severity"]
			if sev != "critical" && sev != "warning" {
				t.Errorf("%s: severity %q", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary", r.Alert)
			}
			a := strings.ToLower(r.Alert)
			if r.Annotations["runbook_url"] != "deploy/README.md#"+a {
				t.Errorf("%s: runbook_url %q, want deploy/README.md#%s", r.Alert, r.Annotations["runbook_url"], a)
			}
			if text, ok := sections[a]; !ok || len(strings.Fields(text)) < 25 {
				t.Errorf("%s: deploy/README.md has no runbook section ### %s (with a paragraph)", r.Alert, r.Alert)
			}
		}
	}
	// The six: breaker open, pool saturation, NACKed policy,
	// ext_authz error rate, audit chain broken, refusals spiking.
	for _, want := range []string{"TenantGuardPostgresBreakerOpen", "TenantGuardPoolSaturated", "TenantGuardPolicyNACKed",
		"TenantGuardExtAuthzErrors", "TenantGuardAuditChainBroken", "TenantGuardIsolationRefusalsSpike"} {
		if _, ok := sections[strings.ToLower(want)]; !ok {
			t.Errorf("no alert and runbook %s", want)
		}
	}
	if alerts < 6 {
		t.Fatalf("%d alerts", alerts)
	}
}

// TestDashboards: one dashboard per component, unique uids and panel ids,
// every panel on the dashboard's data source variable.
func TestDashboards(t *testing.T) {
	uids := map[string]bool{}
	for _, name := range []string{"sidecar", "extauthz", "controlplane", "injector"} {
		d, err := deploycheck.ReadDashboard(filepath.Join("grafana", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if d.UID == "" || uids[d.UID] || d.Title == "" {
			t.Errorf("%s: uid %q title %q", name, d.UID, d.Title)
		}
		uids[d.UID] = true
		ids := map[int]bool{}
		targets := 0
		for _, p := range d.AllPanels() {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", name, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q data source %+v", name, p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", name, p.Title)
			}
			targets += len(p.Targets)
		}
		if targets < 5 {
			t.Errorf("%s: %d queries", name, targets)
		}
	}
}
