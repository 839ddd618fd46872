package session

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"
)

// flushNow writes v's pending analytics, as the flusher does every second.
func flushNow(t testing.TB, v *Verifier) {
	t.Helper()
	if err := v.flush(context.Background()); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

func TestAnalyticsCounts(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	s, tok := f.create(t, "acme", "alice")
	c, err := v.Check(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	l, err := v.Open(ctx, "acme", tok, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// HTTP requests through ext_authz and statements through a sidecar
	// lease count into the same session.
	for i := range 6 {
		v.Record(c.SessionID, uint64(100+i%3), "")
	}
	v.Record(c.SessionID, 0, "no-ddl")
	l.Record(200, "")
	l.Record(201, "no-ddl")
	l.Record(201, "cross-tenant-key")
	flushNow(t, v)
	l.Record(202, "") // a second flush adds to the first
	flushNow(t, v)

	a, err := f.store.Analytics(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a.SessionID != s.ID || a.Tenant != "acme" || a.Requests != 11 || a.Refused != 3 || a.DistinctStatements != 6 {
		t.Fatalf("Analytics = %+v; want 11 requests, 3 refused, 6 distinct statements", a)
	}
	if len(a.RefusedByRule) != 2 || a.RefusedByRule["no-ddl"] != 2 || a.RefusedByRule["cross-tenant-key"] != 1 {
		t.Fatalf("RefusedByRule = %v", a.RefusedByRule)
	}
	if !strings.Contains(a.Anomaly.Method, "Not enough history") {
		t.Fatalf("a new session has an anomaly score: %+v", a.Anomaly)
	}

	// Analytics outlive the session, with its tenant.
	if err := f.store.Revoke(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	a, err = f.store.Analytics(ctx, s.ID)
	if err != nil || a.Tenant != "acme" || a.Requests != 11 {
		t.Fatalf("Analytics after Revoke = %+v, %v", a, err)
	}
	maxExp := s.MaxExpiresAt.Add(analyticsRetention)
	for _, k := range []string{f.store.keys.stats(s.ID), f.store.keys.fingerprints(s.ID), f.store.keys.minutes(s.ID)} {
		if at := f.rdb.ExpireTime(ctx, k).Val(); at != time.Duration(maxExp.Unix())*time.Second {
			t.Errorf("%s expires at %d, want %d", k, int64(at/time.Second), maxExp.Unix())
		}
	}
	// A live session with no recorded requests yet has zero analytics.
	s2, _ := f.create(t, "acme", "bob")
	a, err = f.store.Analytics(ctx, s2.ID)
	if err != nil || a.Tenant != "acme" || a.Requests != 0 || a.RefusedByRule == nil {
		t.Fatalf("Analytics of a fresh session = %+v, %v", a, err)
	}
}

func TestAnalyticsFingerprintCap(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	s, _ := f.create(t, "acme", "alice")
	id, _ := parseID(s.ID)
	const n = maxPrints + 500
	for i := range n {
		v.Record(id, uint64(i+1), "")
	}
	if got := count(v.m.droppedPrints); got != n-maxPrints {
		t.Fatalf("%d fingerprints dropped, want %d", got, n-maxPrints)
	}
	flushNow(t, v)
	a, err := f.store.Analytics(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	// HyperLogLog: within a few percent.
	if a.Requests != n || math.Abs(float64(a.DistinctStatements-maxPrints)) > maxPrints*0.03 {
		t.Fatalf("Analytics = %d requests, %d distinct; want %d, about %d", a.Requests, a.DistinctStatements, n, maxPrints)
	}
}

func TestAnalyticsKeptWhileStoreDown(t *testing.T) {
	leakCheck(t)
	srv := ownRedis(t)
	f := newFixtureAt(t, srv.Addr(), Config{Grace: time.Minute})
	v := f.verifier(t)
	ctx := context.Background()
	s, _ := f.create(t, "acme", "alice")
	id, _ := parseID(s.ID)
	v.Record(id, 1, "")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := v.flush(ctx); err == nil {
		t.Fatal("flush with the store down succeeded")
	}
	v.Record(id, 2, "rule")
	restart(t, srv)
	// The restarted store is empty; the counts must arrive there intact
	// (the script is loaded again too).
	waitHealthy(t, v, true)
	flushNow(t, v)
	a, err := f.store.Analytics(ctx, s.ID)
	if err != nil || a.Requests != 2 || a.Refused != 1 || a.DistinctStatements != 2 {
		t.Fatalf("Analytics after the outage = %+v, %v; want 2 requests, 1 refused, 2 distinct", a, err)
	}
}

func TestAnomalyScore(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{TTL: time.Hour})
	// Start on a minute boundary, ahead of the real clock, so Redis
	// expiries (set from the fake clock) stay in the future.
	f.clock.ns.Store(time.Now().Truncate(time.Minute).Add(time.Minute).UnixNano())
	v := f.verifier(t)
	ctx := context.Background()
	s, _ := f.create(t, "acme", "alice")
	id, _ := parseID(s.ID)
	var print uint64
	minute := func(requests, refused, newPrints int) {
		for i := range requests {
			rule := ""
			if i < refused {
				rule = "no-ddl"
			}
			fp := uint64(1) // a statement seen before
			if i < newPrints {
				print++
				fp = 1000 + print
			}
			v.Record(id, fp, rule)
		}
		flushNow(t, v)
		f.clock.Advance(time.Minute)
	}
	score := func() Anomaly {
		t.Helper()
		a, err := f.store.Analytics(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		return a.Anomaly
	}
	// Two minutes of history are not enough.
	minute(10, 0, 2)
	minute(12, 1, 1)
	if a := score(); a.Score != 0 || !strings.Contains(a.Method, "Not enough history") || len(a.Components) != 0 {
		t.Fatalf("with 1 earlier minute: %+v", a)
	}
	// A steady history, and a minute like it.
	for i := range 8 {
		minute(10+i%3, i%2, 1)
	}
	steady := score()
	if steady.Score > 1 || len(steady.Components) != 3 {
		t.Fatalf("steady minute scored %+v", steady)
	}
	// A burst: ten times the requests, many refusals and new statements.
	minute(120, 40, 60)
	burst := score()
	t.Logf("steady: %.2f, burst: %.2f (%s; %s)", steady.Score, burst.Score, burst.Method, burst.Window)
	if burst.Score < 10 {
		t.Fatalf("burst scored %+v, want at least 10", burst)
	}
	want := map[string]float64{"requests_per_minute": 120, "refusals_per_minute": 40, "new_statements_per_minute": 60}
	for _, c := range burst.Components {
		if c.Current != want[c.Name] || c.Z <= 5 || c.Z > burst.Score {
			t.Fatalf("component %+v, want current %v and a large z", c, want[c.Name])
		}
	}
	// A quiet minute after the burst is not an anomaly.
	minute(0, 0, 0)
	if a := score(); a.Score != 0 {
		t.Fatalf("quiet minute scored %+v", a)
	}
}

func TestAnomalyStatistic(t *testing.T) {
	series := func(counts ...[3]float64) minuteSeries {
		m := minuteSeries{}
		for i, c := range counts {
			if c != ([3]float64{}) {
				m[int64(100+i)] = &[3]float64{c[0], c[1], c[2]}
			}
		}
		return m
	}
	for _, tc := range []struct {
		name      string
		m         minuteSeries
		now       int64
		live      bool
		score     float64
		noHistory bool
	}{
		{name: "no activity", m: minuteSeries{}, now: 200, live: true, noHistory: true},
		{name: "two earlier minutes", m: series([3]float64{5}, [3]float64{5}, [3]float64{50}), now: 103, live: true, noHistory: true},
		// Flat history: stddev 0, floored at 1, so z is the plain excess.
		{name: "flat history, burst", m: series([3]float64{5}, [3]float64{5}, [3]float64{5}, [3]float64{9, 2}), now: 104, live: true, score: 4},
		{name: "flat history, same", m: series([3]float64{5}, [3]float64{5}, [3]float64{5}, [3]float64{5}), now: 104, live: true, score: 0},
		// 10, 0, 10, 0: mean 5, stddev 5; 20 → z 3.
		{name: "noisy history", m: series([3]float64{10}, [3]float64{0}, [3]float64{10}, [3]float64{0}, [3]float64{20}), now: 105, live: true, score: 3},
		// Minutes without activity count as zeros: 30,0,0,0 → mean 7.5, stddev ≈ 12.99.
		{name: "gaps are zeros", m: series([3]float64{30}, [3]float64{}, [3]float64{}, [3]float64{}, [3]float64{30}), now: 105, live: true, score: (30 - 7.5) / math.Sqrt(168.75)},
		// An ended session is judged on its last active minute, not on
		// the silence since.
		{name: "ended session", m: series([3]float64{5}, [3]float64{5}, [3]float64{5}, [3]float64{9}), now: 500, live: false, score: 4},
		{name: "live session gone quiet", m: series([3]float64{5}, [3]float64{5}, [3]float64{5}, [3]float64{9}), now: 500, live: true, score: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := anomaly(tc.m, tc.now, tc.live)
			if got := strings.Contains(a.Method, "Not enough history"); got != tc.noHistory {
				t.Fatalf("method %q", a.Method)
			}
			if math.Abs(a.Score-tc.score) > 1e-9 {
				t.Fatalf("score %v, want %v (%+v)", a.Score, tc.score, a)
			}
			if a.Window == "" || a.Components == nil {
				t.Fatalf("incomplete: %+v", a)
			}
		})
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	s, tok := f.create(t, "acme", "alice")
	l, err := v.Open(context.Background(), "acme", tok, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	id, _ := parseID(s.ID)
	i := 0
	record := func() {
		i++
		v.Record(id, uint64(i%8+1), []string{"", "", "no-ddl"}[i%3])
		l.Record(uint64(i%8+1), "")
	}
	// Let the maps reach their size, then go through a flush so the
	// flusher's spare maps are sized too.
	for range 100 {
		record()
	}
	flushNow(t, v)
	for range 100 {
		record()
	}
	flushNow(t, v)
	if n := testing.AllocsPerRun(1000, record); n != 0 {
		t.Fatalf("Record allocates %.1f times per call", n)
	}
}
