// Package deploycheck reads the monitoring half of deploy/ — Prometheus
// rules and Grafana dashboards — for the tests that check it: every PromQL
// expression, parsed with Prometheus' own parser, and the metric and label
// names each one uses. deploy's own tests check that they parse; the
// end-to-end test checks the names against what the processes export.
package deploycheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// Root is the repository's deploy/ directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy")
}

// Query is one PromQL expression of deploy/.
type Query struct {
	// Where names the file and the rule, panel or variable.
	Where string
	// Expr is the expression as Prometheus gets it (Grafana's variables
	// replaced by values).
	Expr string
}

// Rules is a Prometheus rule file, decoded with the fields Prometheus'
// rulefmt knows (unknown ones are an error, as there).
type Rules struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []Rule `yaml:"rules"`
	} `yaml:"groups"`
}

// Rule is an alerting or recording rule.
type Rule struct {
	Record        string            `yaml:"record"`
	Alert         string            `yaml:"alert"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

// ReadRules decodes a rule file strictly.
func ReadRules(path string) (*Rules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Rules
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// Dashboard is the part of a Grafana dashboard model that holds queries.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// Panel is a dashboard panel (rows hold panels too).
type Panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []Panel `json:"panels"`
}

// ReadDashboard decodes a dashboard.
func ReadDashboard(path string) (*Dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}

// AllPanels is every panel of d, those inside rows included.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// grafanaVar is a Grafana variable reference: $name, ${name} or [[name]].
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// Substitute replaces Grafana's variables with values Prometheus accepts:
// intervals become 5m, every other variable "x" (they appear only inside
// label values).
func Substitute(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}[]")
		if i := strings.IndexByte(name, ':'); i >= 0 {
			name = name[:i]
		}
		switch name {
		case "__rate_interval", "__interval", "__range", "__range_s":
			return "5m"
		}
		return "x"
	})
}

// labelValues is Grafana's label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*$`)

// Queries returns every PromQL expression of the rules and dashboards
// under root (deploy/).
func Queries(root string) ([]Query, error) {
	var out []Query
	rules, err := filepath.Glob(filepath.Join(root, "prometheus", "alerts*.yaml"))
	if err != nil {
		return nil, err
	}
	for _, path := range rules {
		r, err := ReadRules(path)
		if err != nil {
			return nil, err
		}
		for _, g := range r.Groups {
			for _, rule := range g.Rules {
				name := rule.Alert + rule.Record
				out = append(out, Query{Where: fmt.Sprintf("%s: %s", filepath.Base(path), name), Expr: rule.Expr})
			}
		}
	}
	dashboards, err := filepath.Glob(filepath.Join(root, "grafana", "*.json"))
	if err != nil {
		return nil, err
	}
	for _, path := range dashboards {
		d, err := ReadDashboard(path)
		if err != nil {
			return nil, err
		}
		base := filepath.Base(path)
		for _, p := range d.AllPanels() {
			for _, t := range p.Targets {
				out = append(out, Query{Where: fmt.Sprintf("%s: panel %q %s", base, p.Title, t.RefID), Expr: Substitute(t.Expr)})
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				var s string
				if json.Unmarshal(v.Query, &s) != nil {
					return nil, fmt.Errorf("%s: variable %s: query is neither a string nor an object", base, v.Name)
				}
				q.Query = s
			}
			m := labelValues.FindStringSubmatch(q.Query)
			if m == nil {
				return nil, fmt.Errorf("%s: variable %s: %q is not label_values(selector, label)", base, v.Name, q.Query)
			}
			out = append(out, Query{Where: fmt.Sprintf("%s: variable %s", base, v.Name), Expr: Substitute(m[1])})
		}
	}
	return out, nil
}

// Recorded returns the names the recording rules under root define.
func Recorded(root string) (map[string]bool, error) {
	out := map[string]bool{}
	rules, err := filepath.Glob(filepath.Join(root, "prometheus", "alerts*.yaml"))
	if err != nil {
		return nil, err
	}
	for _, path := range rules {
		r, err := ReadRules(path)
		if err != nil {
			return nil, err
		}
		for _, g := range r.Groups {
			for _, rule := range g.Rules {
				if rule.Record != "" {
					out[rule.Record] = true
				}
			}
		}
	}
	return out, nil
}

// Selector is a metric a query selects and the labels it matches on.
type Selector struct {
	Metric string
	Labels []string
	// Equal holds the label values the selector asks for exactly
	// (job="tenantguard-sidecar").
	Equal map[string]string
}

// Parse parses expr with Prometheus' parser and returns its selectors.
func Parse(expr string) ([]Selector, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var out []Selector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		s := Selector{Metric: vs.Name, Equal: map[string]string{}}
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type == labels.MatchEqual {
					s.Metric = m.Value
				}
				continue
			}
			s.Labels = append(s.Labels, m.Name)
			if m.Type == labels.MatchEqual {
				s.Equal[m.Name] = m.Value
			}
		}
		sort.Strings(s.Labels)
		out = append(out, s)
		return nil
	})
	return out, nil
}
