package session

import (
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Bounds of the label values of the per-tenant counters. Tenant ids come
// from the policy and rule names from the data planes' fixed set, so the
// caps are rarely reached; they keep a misconfiguration from growing the
// exposition without bound.
const (
	maxTenantLabels = 200
	maxRuleLabels   = 100
	// otherLabel stands for the tenants or rules past the cap. Neither a
	// tenant id (^[a-z0-9]...) nor, in practice, a rule name starts with "_".
	otherLabel = "_other"
	// unknownTenant labels requests of a session whose tenant this
	// verifier has not seen (Verifier.Record without an earlier Check).
	unknownTenant = "_unknown"
)

// tenantCounters are tenantguard_session_requests_total{tenant} and
// tenantguard_session_refusals_total{tenant,rule} with bounded label
// values. It is one Collector, so verifiers sharing a registry share it
// and its caps.
type tenantCounters struct {
	requests *prometheus.CounterVec
	refusals *prometheus.CounterVec

	mu      sync.Mutex
	tenants map[string]*tenantCounter // at most maxTenantLabels named, plus otherLabel and unknownTenant
	named   int                       // tenants in tenants other than otherLabel and unknownTenant
	rules   map[string]struct{}       // rule label values in use, at most maxRuleLabels
}

func newTenantCounters() *tenantCounters {
	return &tenantCounters{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_session_requests_total",
			Help: "Requests recorded for session analytics (ext_authz checks and data-plane statements) by tenant; tenants past the first 200 count as _other.",
		}, []string{"tenant"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_session_refusals_total",
			Help: "Refused requests recorded for session analytics by tenant and refusing rule; tenants past the first 200 and rules past the first 100 count as _other.",
		}, []string{"tenant", "rule"}),
		tenants: make(map[string]*tenantCounter),
		rules:   make(map[string]struct{}),
	}
}

// Describe implements prometheus.Collector.
func (c *tenantCounters) Describe(ch chan<- *prometheus.Desc) {
	c.requests.Describe(ch)
	c.refusals.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *tenantCounters) Collect(ch chan<- prometheus.Metric) {
	c.requests.Collect(ch)
	c.refusals.Collect(ch)
}

// tenantCounter is one tenant label value's counters, resolved once and
// kept by the session states of the tenant, so counting takes no lock and
// does not allocate.
type tenantCounter struct {
	parent   *tenantCounters
	tenant   string // the label value
	requests prometheus.Counter
	// byRule maps a rule name as recorded to its child (otherLabel's for
	// rules past the cap). It is copied on write: rules are few and fixed,
	// so after the first refusals every lookup is a plain map read.
	byRule atomic.Pointer[map[string]prometheus.Counter]
}

// forTenant returns the counters of tenant ("" is unknownTenant), creating
// them the first time; past maxTenantLabels tenants it returns otherLabel's.
// It is called when a session state is created, not per request.
func (c *tenantCounters) forTenant(tenant string) *tenantCounter {
	if tenant == "" {
		tenant = unknownTenant
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tc := c.tenants[tenant]; tc != nil {
		return tc
	}
	switch {
	case tenant == unknownTenant || tenant == otherLabel:
	case c.named >= maxTenantLabels || !utf8.ValidString(tenant):
		tenant = otherLabel
	default:
		c.named++
	}
	return c.child(tenant)
}

// child returns the counters of a label value, creating them; c.mu is held.
func (c *tenantCounters) child(label string) *tenantCounter {
	if tc := c.tenants[label]; tc != nil {
		return tc
	}
	tc := &tenantCounter{parent: c, tenant: label, requests: c.requests.WithLabelValues(label)}
	tc.byRule.Store(new(map[string]prometheus.Counter))
	c.tenants[label] = tc
	return tc
}

// refused returns the refusal counter of rule for this tenant. After the
// first refusal by rule it is one lock-free map lookup.
func (tc *tenantCounter) refused(rule string) prometheus.Counter {
	if ctr, ok := (*tc.byRule.Load())[rule]; ok {
		return ctr
	}
	return tc.addRule(rule)
}

// addRule resolves rule's child and publishes a copy of byRule holding it.
func (tc *tenantCounter) addRule(rule string) prometheus.Counter {
	c := tc.parent
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := *tc.byRule.Load()
	if ctr, ok := cur[rule]; ok { // added while we waited for the lock
		return ctr
	}
	label := rule
	if _, ok := c.rules[label]; !ok {
		if len(c.rules) >= maxRuleLabels || label == otherLabel || !utf8.ValidString(label) {
			label = otherLabel
		} else {
			c.rules[label] = struct{}{}
		}
	}
	ctr := c.refusals.WithLabelValues(tc.tenant, label)
	// Remember the rule as recorded, unless past-the-cap names would grow
	// the map: those take this slow path each time, which only a data
	// plane sending ever new rule names would notice.
	if len(cur) < maxRuleLabels+1 {
		next := make(map[string]prometheus.Counter, len(cur)+1)
		for r, x := range cur {
			next[r] = x
		}
		next[rule] = ctr
		tc.byRule.Store(&next)
	}
	return ctr
}
