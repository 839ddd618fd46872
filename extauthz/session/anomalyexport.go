package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Defaults of ExportAnomalies.
const (
	DefaultAnomalyInterval = 15 * time.Second
	DefaultAnomalyTop      = 10
)

const (
	// activeWindow is how long after its last analytics flush a session
	// stays in the active set and is scored.
	activeWindow = 5 * time.Minute
	// maxScored bounds the sessions one round scores: the most recently
	// flushed ones.
	maxScored = 1000
	// scoreBatch is how many sessions one pipeline reads.
	scoreBatch = 100
	// maxRoundTime bounds one round's reads, and so how long a round in
	// flight can delay the end of ExportAnomalies.
	maxRoundTime = 5 * time.Second
)

// anomalyHelp states the statistic, as Anomaly.Method does.
const anomalyHelp = "the score is the largest z = (last complete minute − mean of the session's earlier minutes) / " +
	"max(their standard deviation, 1) over requests, refusals and new distinct statements per minute, or 0 if none is positive."

// anomalyExporter scores the active sessions and exports the scores with
// bounded cardinality: one series per session for the top few only, a
// histogram and a count for all of them.
type anomalyExporter struct {
	store *Store
	log   *slog.Logger
	top   int

	score  *prometheus.GaugeVec
	scores prometheus.Histogram
	active prometheus.Gauge
	shown  map[scoreLabels]struct{} // series of score set by the last round
}

// scoreLabels are the label values of one score series.
type scoreLabels struct{ tenant, id string }

// scoredSession is one session's score in a round.
type scoredSession struct {
	scoreLabels
	score float64
}

// ExportAnomalies scores every session active in the last five minutes
// once per interval (0: DefaultAnomalyInterval), as Analytics does, and
// exports the results as metrics registered with reg, keeping a series of
// its own only for the top (0: DefaultAnomalyTop) sessions with a score
// above 0. It returns when stop is closed, after the round in flight: run
// it in a goroutine the caller waits for. If the metrics cannot be
// registered it logs why and returns at once.
func (s *Store) ExportAnomalies(stop <-chan struct{}, reg prometheus.Registerer, log *slog.Logger, interval time.Duration, top int) {
	if log == nil {
		log = slog.Default()
	}
	if interval <= 0 {
		interval = DefaultAnomalyInterval
	}
	e, err := newAnomalyExporter(s, reg, log, top)
	if err != nil {
		log.Error("session anomaly metrics not exported", "error", err)
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(interval, maxRoundTime))
		err := e.round(ctx)
		cancel()
		if err != nil {
			log.Warn("session anomaly round failed; retrying", "error", err)
		}
	}
}

// newAnomalyExporter creates the exporter's metrics and registers them
// with reg (if not nil).
func newAnomalyExporter(s *Store, reg prometheus.Registerer, log *slog.Logger, top int) (*anomalyExporter, error) {
	if top <= 0 {
		top = DefaultAnomalyTop
	}
	e := &anomalyExporter{store: s, log: log, top: top}
	var err error
	e.score, err = registered(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tenantguard_session_anomaly_score",
		Help: fmt.Sprintf("Anomaly score of the %d highest-scoring sessions active in the last %s (scores above 0 only); ",
			top, activeWindow) + anomalyHelp,
	}, []string{"tenant", "session_id"}))
	if err == nil {
		e.scores, err = registered(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tenantguard_session_anomaly_scores",
			Help:    "Anomaly score of every session scored, one observation per session and round; " + anomalyHelp,
			Buckets: []float64{0, 1, 2, 3, 5, 10, 20, 50},
		}))
	}
	if err == nil {
		e.active, err = registered(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantguard_session_active",
			Help: fmt.Sprintf("Sessions with analytics written in the last %s that the last anomaly round scored (at most %d).", activeWindow, maxScored),
		}))
	}
	if err != nil {
		return nil, fmt.Errorf("session anomaly metrics: %w", err)
	}
	return e, nil
}

// round scores the sessions in the active set (the most recent maxScored)
// and publishes the scores. On an error the metrics keep the last round's.
func (e *anomalyExporter) round(ctx context.Context) error {
	s := e.store
	now := s.cfg.Now()
	ids, err := s.rdb.ZRevRangeByScore(ctx, s.keys.active(), &redis.ZRangeBy{
		Min: strconv.FormatInt(now.Add(-activeWindow).Unix(), 10), Max: "+inf", Count: maxScored,
	}).Result()
	if err != nil {
		return fmt.Errorf("active sessions: %w", err)
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return !validID(id) })
	nowMinute := now.Unix() / 60
	scored := make([]scoredSession, 0, len(ids))
	for batch := range slices.Chunk(ids, scoreBatch) {
		pipe := s.rdb.Pipeline()
		qs := make([]*analyticsQuery, len(batch))
		for i, id := range batch {
			qs[i] = s.queryAnalytics(ctx, pipe, id)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("analytics of active sessions: %w", err)
		}
		for _, q := range qs {
			a, err := q.result(nowMinute)
			if errors.Is(err, ErrNotFound) { // its analytics expired since
				continue
			}
			if err != nil {
				e.log.Warn("session not scored", "session", q.id, "error", err)
				continue
			}
			scored = append(scored, scoredSession{scoreLabels{a.Tenant, a.SessionID}, a.Anomaly.Score})
		}
	}
	e.publish(scored)
	return nil
}

// publish exports one round's scores. The score series are updated in
// place, deleting those that left the top, rather than Reset and refilled,
// so a scrape never sees the top empty.
func (e *anomalyExporter) publish(scored []scoredSession) {
	for _, sc := range scored {
		e.scores.Observe(sc.score)
	}
	e.active.Set(float64(len(scored)))
	slices.SortFunc(scored, func(a, b scoredSession) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	shown := make(map[scoreLabels]struct{}, e.top)
	for _, sc := range scored[:min(e.top, len(scored))] {
		if sc.score <= 0 {
			break
		}
		if sc.tenant == "" || !utf8.ValidString(sc.tenant) { // not a tenant id: never in practice
			sc.tenant = unknownTenant
		}
		shown[sc.scoreLabels] = struct{}{}
		e.score.WithLabelValues(sc.tenant, sc.id).Set(sc.score)
	}
	for l := range e.shown {
		if _, ok := shown[l]; !ok {
			e.score.DeleteLabelValues(l.tenant, l.id)
		}
	}
	e.shown = shown
}
