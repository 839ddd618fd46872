package pg

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
)

// cacheView is the upstream catalog as the cache's listener last read it:
// the tables that carry the invalidation trigger (only their results are
// cached), how names resolve to them, and each table's generation for all
// tenants. It is replaced whole when the listener reconnects or the
// catalog changes, which makes every entry of the old one stale.
type cacheView struct {
	tables []cacheTable
	allGen []atomic.Uint64
	// byName maps "schema.table" of every table and partition with the
	// trigger to its table (a partition's is its root's).
	byName map[string]int
	// byRel maps an unqualified name to the tables of that name; an
	// unqualified reference is resolved only when there is one and no
	// relation of another schema shares the name (shadowed).
	byRel    map[string][]int
	shadowed map[string]bool
	// isolation is the database's default_transaction_isolation for the
	// upstream role.
	isolation string
	// digest identifies the catalog rows, to tell a reload that changed
	// nothing.
	digest string

	pol atomic.Pointer[cachePolicy]
}

// cacheTable is one table as the policy names it (partitions fold into
// their root).
type cacheTable struct {
	name string
	// cascade: tables whose foreign keys cascade from this one, directly
	// or not; a write here may change them, for any tenant.
	cascade []int
	// writesOthers: the table (or a partition) has other triggers or
	// rules, which may change tables the writer does not name.
	writesOthers bool
}

// catalogRow is one row of rls.CacheCatalogSQL.
type catalogRow struct {
	rel, root    string
	writesOthers bool
	cascade      []string
	shadows      []string // schemas holding another relation of the same name
}

// newCacheView builds a view from the catalog rows.
func newCacheView(rows []catalogRow, isolation string) *cacheView {
	v := &cacheView{byName: map[string]int{}, byRel: map[string][]int{}, shadowed: map[string]bool{}, isolation: isolation}
	sort.Slice(rows, func(i, j int) bool { return rows[i].rel < rows[j].rel })
	idx := map[string]int{}
	for _, r := range rows {
		if _, ok := idx[r.root]; !ok {
			idx[r.root] = len(v.tables)
			v.tables = append(v.tables, cacheTable{name: r.root})
		}
	}
	for _, r := range rows {
		i := idx[r.root]
		v.byName[r.rel] = i
		if r.writesOthers {
			v.tables[i].writesOthers = true
		}
	}
	for _, r := range rows {
		i := idx[r.root]
		_, rel := splitQualified(r.rel)
		if !slices.Contains(v.byRel[rel], i) {
			v.byRel[rel] = append(v.byRel[rel], i)
		}
		for _, s := range r.shadows {
			if _, covered := v.byName[s+"."+rel]; !covered {
				v.shadowed[rel] = true
			}
		}
		for _, c := range r.cascade {
			if ci, ok := v.byName[c]; ok && ci != i && !slices.Contains(v.tables[i].cascade, ci) {
				v.tables[i].cascade = append(v.tables[i].cascade, ci)
			}
		}
	}
	// Cascades of cascades.
	for i := range v.tables {
		seen := map[int]bool{i: true}
		queue := slices.Clone(v.tables[i].cascade)
		var all []int
		for len(queue) > 0 {
			c := queue[0]
			queue = queue[1:]
			if seen[c] {
				continue
			}
			seen[c] = true
			all = append(all, c)
			queue = append(queue, v.tables[c].cascade...)
		}
		v.tables[i].cascade = all
	}
	v.allGen = make([]atomic.Uint64, len(v.tables))
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", isolation)
	for _, r := range rows {
		fmt.Fprintf(&b, "%s %s %v %v %v\n", r.rel, r.root, r.writesOthers, r.cascade, r.shadows)
	}
	v.digest = b.String()
	return v
}

func splitQualified(name string) (schema, rel string) {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return name[:i], name[i+1:]
	}
	return "", name
}

// resolve returns the tables a relation reference may denote. ok is false
// when it may denote something without the trigger: not a known table, an
// unqualified name shared with another relation, or one of several.
func (v *cacheView) resolve(r firewall.Relation) (tables []int, ok bool) {
	if r.Schema != "" {
		i, found := v.byName[r.Schema+"."+r.Name]
		if !found {
			return nil, false
		}
		return []int{i}, true
	}
	ts := v.byRel[r.Name]
	if len(ts) != 1 || v.shadowed[r.Name] {
		return ts, false
	}
	return ts, true
}

// cachePolicy is a view read under one policy snapshot: its rules, which
// tables are row-isolated, and the plans of statements seen so far.
type cachePolicy struct {
	snap     *policy.Snapshot
	rules    *policy.PgCache
	isolated []bool // by table index
	plans    sync.Map
	nplans   atomic.Int64
}

// maxPlans bounds the plans remembered per policy; past it they are
// forgotten and made again.
const maxPlans = 10000

// policyFor returns v read under snap, and whether the cache's contents
// must go (the rules or the protected tables changed).
func (v *cacheView) policyFor(snap *policy.Snapshot) (cp *cachePolicy, changed bool) {
	cur := v.pol.Load()
	if cur != nil && cur.snap == snap {
		return cur, false
	}
	cp = &cachePolicy{snap: snap, rules: snap.PgCache(), isolated: make([]bool, len(v.tables))}
	isolated := map[string]bool{}
	for _, t := range snap.Tables() {
		if t.TenantColumn != "" {
			isolated[t.Name] = true
		}
	}
	for i, t := range v.tables {
		cp.isolated[i] = isolated[t.name]
	}
	changed = cur != nil && (cur.rules != cp.rules || !slices.Equal(cur.isolated, cp.isolated))
	if !v.pol.CompareAndSwap(cur, cp) {
		return v.pol.Load(), false // another client got there first
	}
	return cp, changed
}

// stmtPlan is what the cache does with one statement (one verdict) under
// one policy and view.
type stmtPlan struct {
	// cacheable: its results may be cached, subject to a rule opting the
	// statement in for the tenant (ttlFor). reason and skip say why not.
	cacheable    bool
	reason, skip string
	fingerprint  uint64
	tables       []int    // tables read
	names        []string // their policy names, for the rules
	// Writes: tables to invalidate when the statement's transaction ends;
	// barrier: it may write tables it does not name (functions, CALL, a
	// table with other triggers or rules), whose notifications must be in
	// before the client hears of the commit; flush: it changed the schema.
	writes  []int
	barrier bool
	flush   bool
}

// plan returns the plan for verdict vd.
func (cp *cachePolicy) plan(v *cacheView, vd *firewall.Verdict) *stmtPlan {
	if p, ok := cp.plans.Load(vd); ok {
		return p.(*stmtPlan)
	}
	p := buildPlan(cp, v, vd)
	if cp.nplans.Add(1) > maxPlans {
		cp.plans.Clear()
		cp.nplans.Store(0)
	}
	cp.plans.Store(vd, p)
	return p
}

func buildPlan(cp *cachePolicy, v *cacheView, vd *firewall.Verdict) *stmtPlan {
	p := &stmtPlan{fingerprint: vd.Fingerprint}
	ci := vd.Cache
	if ci == nil {
		p.reason, p.skip = "refused or not parsed", "not_cacheable"
		return p
	}
	for _, w := range ci.Writes {
		ts, _ := v.resolve(w)
		if w.Schema == "" {
			// Any table of that name: over-invalidating is harmless.
			ts = v.byRel[w.Name]
		}
		for _, t := range ts {
			if !slices.Contains(p.writes, t) {
				p.writes = append(p.writes, t)
			}
			if v.tables[t].writesOthers {
				p.barrier = true
			}
		}
	}
	if ci.WritesUnknown {
		if ci.DDL {
			p.flush = true
		} else {
			p.barrier = true
		}
	}
	undeclared := ""
	for _, f := range ci.Functions {
		if !cp.rules.Stable(f) {
			p.barrier = true // it may write anything
			if undeclared == "" {
				undeclared = f
			}
		}
	}
	switch {
	case !ci.Cacheable:
		p.reason, p.skip = ci.Reason, "not_cacheable"
		return p
	case undeclared != "":
		p.reason, p.skip = undeclared+"() is not declared stable in pg_cache.stable_functions", "not_cacheable"
		return p
	}
	for _, r := range ci.Reads {
		ts, ok := v.resolve(r)
		if !ok {
			p.reason, p.skip = fmt.Sprintf("it reads %s, which is not a table with the invalidation trigger (or the name is ambiguous)", r), "uncovered_table"
			p.tables, p.names = nil, nil
			return p
		}
		for _, t := range ts {
			if !slices.Contains(p.tables, t) {
				p.tables = append(p.tables, t)
				p.names = append(p.names, v.tables[t].name)
			}
		}
	}
	p.cacheable = true
	return p
}

// ttlFor returns how long tenant may keep the statement's results, or false
// when no rule opts it in.
func (p *stmtPlan) ttlFor(rules *policy.PgCache, tenant string) (time.Duration, bool) {
	return rules.Match(tenant, p.fingerprint, p.names)
}
