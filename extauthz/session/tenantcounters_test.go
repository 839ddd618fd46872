package session

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather collects c's metrics named name, keyed by their labels as
// "k=v,k=v" in label order.
func gather(t testing.TB, c prometheus.Collector, name string) map[string]*dto.Metric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.Metric{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(ls, ",")] = m
		}
	}
	return out
}

// counterValues maps gather's keys to counter values.
func counterValues(t testing.TB, c prometheus.Collector, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for k, m := range gather(t, c, name) {
		out[k] = m.GetCounter().GetValue()
	}
	return out
}

func TestTenantCounters(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	_, acmeTok := f.create(t, "acme", "alice")
	globex, globexTok := f.create(t, "globex", "bob")
	acme, err := v.Check(ctx, acmeTok)
	if err != nil {
		t.Fatal(err)
	}
	// A session this verifier has only seen in Record counts as unknown
	// until a Check names its tenant.
	globexID, _ := parseID(globex.ID)
	v.Record(globexID, 1, "no-ddl")
	if _, err := v.Check(ctx, globexTok); err != nil {
		t.Fatal(err)
	}
	l, err := v.Open(ctx, "acme", acmeTok, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	for i := range 5 {
		v.Record(acme.SessionID, uint64(i+1), "")
	}
	v.Record(acme.SessionID, 9, "no-ddl")
	l.Record(10, "no-ddl")
	l.Record(11, "cross-tenant-key")
	l.Record(12, "")
	for range 3 {
		v.Record(globexID, 2, "")
	}
	v.Record(globexID, 3, "no-ddl")

	wantRequests := map[string]float64{"tenant=acme": 9, "tenant=globex": 4, "tenant=_unknown": 1}
	wantRefusals := map[string]float64{
		"rule=no-ddl,tenant=acme":           2,
		"rule=cross-tenant-key,tenant=acme": 1,
		"rule=no-ddl,tenant=globex":         1,
		"rule=no-ddl,tenant=_unknown":       1,
	}
	if got := counterValues(t, v.m.tenants, "tenantguard_session_requests_total"); !maps.Equal(got, wantRequests) {
		t.Errorf("requests_total = %v, want %v", got, wantRequests)
	}
	if got := counterValues(t, v.m.tenants, "tenantguard_session_refusals_total"); !maps.Equal(got, wantRefusals) {
		t.Errorf("refusals_total = %v, want %v", got, wantRefusals)
	}
}

func TestTenantCounterCaps(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		tenants, rules       int
		wantTenants          int  // distinct tenant label values
		wantOther            bool // "_other" among them
		wantRules, wantRSets int  // distinct rule label values; refusal series
	}{
		{name: "within the caps", tenants: 3, rules: 4, wantTenants: 3, wantRules: 4, wantRSets: 12},
		{name: "at the caps", tenants: maxTenantLabels, rules: maxRuleLabels, wantTenants: maxTenantLabels, wantRules: maxRuleLabels, wantRSets: maxTenantLabels * maxRuleLabels},
		{name: "past the caps", tenants: maxTenantLabels + 50, rules: maxRuleLabels + 30, wantTenants: maxTenantLabels + 1, wantOther: true,
			wantRules: maxRuleLabels + 1, wantRSets: (maxTenantLabels + 1) * (maxRuleLabels + 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTenantCounters()
			for i := range tc.tenants {
				tcr := c.forTenant(fmt.Sprintf("tenant-%03d", i))
				tcr.requests.Inc()
				for r := range tc.rules {
					tcr.refused(fmt.Sprintf("rule-%03d", r)).Inc()
					tcr.refused(fmt.Sprintf("rule-%03d", r)).Inc() // the second lookup is the cached child
				}
			}
			reqs := counterValues(t, c, "tenantguard_session_requests_total")
			refs := counterValues(t, c, "tenantguard_session_refusals_total")
			if len(reqs) != tc.wantTenants {
				t.Fatalf("%d tenant label values, want %d", len(reqs), tc.wantTenants)
			}
			if got := reqs["tenant=_other"]; (got != 0) != tc.wantOther || tc.wantOther && got != float64(tc.tenants-maxTenantLabels) {
				t.Fatalf("_other counts %v requests with %d tenants", got, tc.tenants)
			}
			rules := map[string]bool{}
			var total float64
			for k, n := range refs {
				rule, _, _ := strings.Cut(strings.TrimPrefix(k, "rule="), ",")
				rules[rule] = true
				total += n
			}
			if len(rules) != tc.wantRules || len(refs) != tc.wantRSets {
				t.Fatalf("%d rule label values in %d series, want %d in %d", len(rules), len(refs), tc.wantRules, tc.wantRSets)
			}
			if want := float64(2 * tc.tenants * tc.rules); total != want {
				t.Fatalf("%v refusals counted, want %v: none lost to the caps", total, want)
			}
			if tc.wantOther && !rules[otherLabel] {
				t.Fatalf("rules past the cap are not under %s: %v", otherLabel, slices.Sorted(maps.Keys(rules)))
			}
		})
	}
}
