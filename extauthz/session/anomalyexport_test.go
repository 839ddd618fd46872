package session

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

// exporterState is what an anomaly round published.
type exporterState struct {
	top    map[string]float64 // "session_id=…,tenant=…" → score
	active float64
	count  uint64 // histogram observations so far
	sum    float64
}

func exported(t testing.TB, reg *prometheus.Registry) exporterState {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	st := exporterState{top: map[string]float64{}}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "tenantguard_session_anomaly_score":
				ls := m.GetLabel()
				st.top[ls[0].GetName()+"="+ls[0].GetValue()+","+ls[1].GetName()+"="+ls[1].GetValue()] = m.GetGauge().GetValue()
			case "tenantguard_session_active":
				st.active = m.GetGauge().GetValue()
			case "tenantguard_session_anomaly_scores":
				st.count, st.sum = m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	return st
}

func topKey(s Session) string { return "session_id=" + s.ID + ",tenant=" + s.Tenant }

func TestAnomalyExporter(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{TTL: time.Hour})
	// On a minute boundary, ahead of the real clock, as TestAnomalyScore.
	f.clock.ns.Store(time.Now().Truncate(time.Minute).Add(time.Minute).UnixNano())
	v := f.verifier(t)
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	e, err := newAnomalyExporter(f.store, reg, testLogger(), 2)
	if err != nil {
		t.Fatal(err)
	}
	round := func() exporterState {
		t.Helper()
		if err := e.round(ctx); err != nil {
			t.Fatalf("round: %v", err)
		}
		return exported(t, reg)
	}

	var ss [5]Session
	for i, tenant := range []string{"acme", "globex", "acme", "globex", "acme"} {
		ss[i], _ = f.create(t, tenant, fmt.Sprintf("user%d", i))
	}
	a, b, c, d, idle := ss[0], ss[1], ss[2], ss[3], ss[4]
	// minute records n requests of the same statement per session, flushes
	// them, and moves the clock to the next minute.
	minute := func(n map[*Session]int) {
		t.Helper()
		for s, k := range n {
			id, _ := parseID(s.ID)
			for range k {
				v.Record(id, 1, "")
			}
		}
		flushNow(t, v)
		f.clock.Advance(time.Minute)
	}
	if st := round(); len(st.top) != 0 || st.active != 0 || st.count != 0 {
		t.Fatalf("before any activity: %+v", st)
	}
	// Six steady minutes; idle is active only in the first, so it has left
	// the active set (five minutes) by the burst.
	minute(map[*Session]int{&a: 10, &b: 10, &c: 10, &d: 10, &idle: 10})
	for range 5 {
		minute(map[*Session]int{&a: 10, &b: 10, &c: 10, &d: 10})
	}
	if st := round(); len(st.top) != 0 || st.active != 4 || st.count != 4 || st.sum != 0 {
		t.Fatalf("steady minutes: %+v, want no series, 4 active sessions scored 0", st)
	}

	// A bursts most, then B, then C; D stays steady. The history is flat
	// (standard deviation floored at 1), so each score is the excess.
	minute(map[*Session]int{&a: 100, &b: 40, &c: 20, &d: 10})
	// That flush pruned the idle session from the active set.
	if err := f.rdb.ZScore(ctx, f.store.keys.active(), idle.ID).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("idle session still in the active set: %v", err)
	}
	if n := f.rdb.ZCard(ctx, f.store.keys.active()).Val(); n != 4 {
		t.Fatalf("active set holds %d sessions, want 4", n)
	}
	if ttl := f.rdb.TTL(ctx, f.store.keys.active()).Val(); ttl <= 0 || ttl > activeWindow {
		t.Fatalf("active set TTL %v, want it to go a window after the last flush", ttl)
	}
	st := round()
	want := map[string]float64{topKey(a): 90, topKey(b): 30}
	if !maps.Equal(st.top, want) {
		t.Fatalf("top after the burst = %v, want only the top 2: %v", st.top, want)
	}
	if st.active != 4 || st.count != 8 || st.sum != 90+30+10 {
		t.Fatalf("after the burst: %+v, want 4 active, 8 observations summing to 130", st)
	}

	// The next minute C bursts; A and B are back to normal, which is below
	// their mean now, so their series go.
	minute(map[*Session]int{&a: 10, &b: 10, &c: 200, &d: 10})
	st = round()
	if len(st.top) != 1 || st.top[topKey(c)] < 10 {
		t.Fatalf("top after C's burst = %v, want only C, scored above 10", st.top)
	}
	if st.active != 4 || st.count != 12 || math.Abs(st.sum-130-st.top[topKey(c)]) > 1e-9 {
		t.Fatalf("after C's burst: %+v", st)
	}
	// The exported score is the one the analytics API reports.
	an, err := f.store.Analytics(ctx, c.ID)
	if err != nil || an.Anomaly.Score != st.top[topKey(c)] {
		t.Fatalf("Analytics(C) = %+v, %v; exported %v", an.Anomaly, err, st.top[topKey(c)])
	}

	// Without flushes for the whole window, nothing is active any more.
	f.clock.Advance(activeWindow + time.Minute)
	if st := round(); len(st.top) != 0 || st.active != 0 || st.count != 12 {
		t.Fatalf("after the window: %+v, want no series and none active", st)
	}
}

func TestExportAnomaliesStops(t *testing.T) {
	for _, tc := range []struct {
		name     string
		conflict bool // a metric of the same name is already registered
	}{
		{name: "runs rounds until stopped"},
		{name: "returns at once when its metrics cannot be registered", conflict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			f := newFixture(t, Config{})
			v := f.verifier(t)
			s, _ := f.create(t, "acme", "alice")
			id, _ := parseID(s.ID)
			v.Record(id, 1, "")
			flushNow(t, v)
			reg := prometheus.NewPedanticRegistry()
			if tc.conflict {
				reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "tenantguard_session_active", Help: "in the way"}))
			}
			stop, done := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				f.store.ExportAnomalies(stop, reg, testLogger(), 10*time.Millisecond, 0)
			}()
			if tc.conflict {
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					t.Fatal("ExportAnomalies kept running without its metrics")
				}
				return
			}
			harness.Eventually(t, 5*time.Second, func() error {
				if st := exported(t, reg); st.active != 1 || st.count == 0 {
					return fmt.Errorf("no round has scored the session yet: %+v", st)
				}
				return nil
			})
			close(stop)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("ExportAnomalies did not return after stop")
			}
		})
	}
}
