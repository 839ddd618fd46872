package session

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Analytics is what a session did, as recorded by the verifiers.
type Analytics struct {
	SessionID          string           `json:"session_id"`
	Tenant             string           `json:"tenant_id"`
	Requests           int64            `json:"requests"`
	Refused            int64            `json:"refused"`
	RefusedByRule      map[string]int64 `json:"refused_by_rule"`
	DistinctStatements int64            `json:"distinct_statements"` // HyperLogLog estimate
	Anomaly            Anomaly          `json:"anomaly"`
}

// Anomaly says how unusual the session's last complete minute is compared
// with its own earlier minutes.
type Anomaly struct {
	Score      float64            `json:"score"`  // 0 = like its own history
	Method     string             `json:"method"` // one sentence explaining the statistic
	Window     string             `json:"window"` // which minutes were compared
	Components []AnomalyComponent `json:"components"`
}

// AnomalyComponent is one per-minute series of the score.
type AnomalyComponent struct {
	Name    string  `json:"name"`
	Current float64 `json:"current"` // value in the last complete minute
	Mean    float64 `json:"mean"`    // mean over the earlier minutes
	StdDev  float64 `json:"stddev"`  // population standard deviation of the earlier minutes
	Z       float64 `json:"z"`       // (Current − Mean) / max(StdDev, 1)
}

// minHistory is how many earlier minutes the score needs; maxHistory
// bounds how many it looks at (a session lives at most MaxAge, and its
// analytics a day longer).
const (
	minHistory = 3
	maxHistory = 7 * 24 * 60
)

// Texts of Anomaly.Method.
const (
	anomalyMethod = "For each of requests, refusals and new distinct statements per minute, " +
		"z = (last complete minute − mean of the earlier minutes) / max(standard deviation of the earlier minutes, 1); " +
		"the score is the largest z, or 0 if none is positive."
	anomalyNoHistory = "Not enough history: the score needs at least 3 minutes of the session's activity before the last complete minute, so it is 0."
)

// anomalySeries are the per-minute series, by their minutes-hash suffix.
var anomalySeries = [...]struct{ name, suffix string }{
	{"requests_per_minute", "r"},
	{"refusals_per_minute", "x"},
	{"new_statements_per_minute", "n"},
}

// Analytics returns the analytics of a session, live or ended, until its
// analytics keys expire a day after its maximum expiry. It fails with
// ErrNotFound if the store has neither the session nor analytics for it.
// Counts arrive from the verifiers about once a second.
func (s *Store) Analytics(ctx context.Context, id string) (Analytics, error) {
	if !validID(id) {
		return Analytics{}, ErrNotFound
	}
	pipe := s.rdb.Pipeline()
	q := s.queryAnalytics(ctx, pipe, id)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Analytics{}, fmt.Errorf("analytics of session %s: %w", id, err)
	}
	return q.result(s.cfg.Now().Unix() / 60)
}

// analyticsQuery is the reads of one session's analytics, queued on a
// pipeline, so the anomaly exporter reads many sessions in one round trip
// and scores them exactly as Analytics does.
type analyticsQuery struct {
	id      string
	stats   *redis.MapStringStringCmd
	prints  *redis.IntCmd
	minutes *redis.MapStringStringCmd
	tenant  *redis.StringCmd
}

// queryAnalytics queues the reads of session id (a valid id) on pipe.
func (s *Store) queryAnalytics(ctx context.Context, pipe redis.Pipeliner, id string) *analyticsQuery {
	return &analyticsQuery{
		id:      id,
		stats:   pipe.HGetAll(ctx, s.keys.stats(id)),
		prints:  pipe.PFCount(ctx, s.keys.fingerprints(id)),
		minutes: pipe.HGetAll(ctx, s.keys.minutes(id)),
		tenant:  pipe.HGet(ctx, s.keys.session(id), "tenant"),
	}
}

// result decodes the executed reads and scores the minute before
// nowMinute; ErrNotFound if the store had neither session nor analytics.
func (q *analyticsQuery) result(nowMinute int64) (Analytics, error) {
	id := q.id
	stats := q.stats.Val()
	live := q.tenant.Err() == nil
	if len(stats) == 0 && !live {
		return Analytics{}, ErrNotFound
	}
	a := Analytics{SessionID: id, Tenant: stats["tenant"], RefusedByRule: map[string]int64{}, DistinctStatements: q.prints.Val()}
	if live {
		a.Tenant = q.tenant.Val()
	}
	for f, val := range stats {
		n, err := strconv.ParseInt(val, 10, 64)
		switch {
		case f == "tenant":
		case err != nil:
			return Analytics{}, fmt.Errorf("analytics of session %s: bad field %q in the store", id, f)
		case f == "requests":
			a.Requests = n
		case f == "refused":
			a.Refused = n
		case strings.HasPrefix(f, "refused:"):
			a.RefusedByRule[strings.TrimPrefix(f, "refused:")] = n
		}
	}
	m, err := parseMinutes(q.minutes.Val())
	if err != nil {
		return Analytics{}, fmt.Errorf("analytics of session %s: %w", id, err)
	}
	a.Anomaly = anomaly(m, nowMinute, live)
	return a, nil
}

// minuteSeries maps a unix minute to its counts, in anomalySeries order.
type minuteSeries map[int64]*[len(anomalySeries)]float64

// parseMinutes decodes the minutes hash ("<minute>:<r|x|n>" → count).
func parseMinutes(h map[string]string) (minuteSeries, error) {
	m := make(minuteSeries, len(h)/2)
	for f, val := range h {
		ms, suffix, ok := strings.Cut(f, ":")
		minute, err1 := strconv.ParseInt(ms, 10, 64)
		n, err2 := strconv.ParseInt(val, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad minute field %q", f)
		}
		for i, sr := range anomalySeries {
			if sr.suffix == suffix {
				if m[minute] == nil {
					m[minute] = new([len(anomalySeries)]float64)
				}
				m[minute][i] += float64(n)
			}
		}
	}
	return m, nil
}

// anomaly scores the last complete minute before nowMinute against the
// minutes from the session's first activity up to it; minutes without
// activity count as zeros. For a session that is no longer live, the last
// minute with activity stands in for the last complete minute, so an ended
// session is judged on how it ended, not on its silence since.
func anomaly(m minuteSeries, nowMinute int64, live bool) Anomaly {
	a := Anomaly{Method: anomalyMethod, Components: []AnomalyComponent{}}
	if len(m) == 0 {
		a.Method, a.Window = anomalyNoHistory, "no activity recorded"
		return a
	}
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for minute := range m {
		first, last = min(first, minute), max(last, minute)
	}
	cur := nowMinute - 1
	if !live {
		cur = min(cur, last)
	}
	first = max(first, cur-maxHistory)
	earlier := cur - first
	a.Window = fmt.Sprintf("minute %s (the last complete one) vs the session's %d earlier minutes since %s",
		minuteString(cur), max(earlier, 0), minuteString(first))
	if earlier < minHistory {
		a.Method = anomalyNoHistory
		return a
	}
	for i, sr := range anomalySeries {
		var sum, sumSq float64
		for minute := first; minute < cur; minute++ {
			if c := m[minute]; c != nil {
				sum += c[i]
				sumSq += c[i] * c[i]
			}
		}
		n := float64(earlier)
		mean := sum / n
		std := math.Sqrt(max(sumSq/n-mean*mean, 0))
		var current float64
		if c := m[cur]; c != nil {
			current = c[i]
		}
		z := (current - mean) / max(std, 1)
		a.Components = append(a.Components, AnomalyComponent{Name: sr.name, Current: current, Mean: mean, StdDev: std, Z: z})
		a.Score = max(a.Score, z)
	}
	return a
}

func minuteString(m int64) string { return time.Unix(m*60, 0).UTC().Format("2006-01-02T15:04Z") }
