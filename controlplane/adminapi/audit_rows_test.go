package adminapi_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/controlplane/store/audittest"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

// statementCost is what PostgreSQL's pg_stat_statements counted for one
// database since its last reset: rows returned or affected, and shared
// buffer pages touched.
type statementCost struct{ rows, pages int64 }

func costSince(t *testing.T, ctx context.Context, conn *pgx.Conn) statementCost {
	t.Helper()
	var c statementCost
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(rows), 0)::bigint, coalesce(sum(shared_blks_hit + shared_blks_read), 0)::bigint
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND query NOT LIKE '%pg_stat_statements%'`).Scan(&c.rows, &c.pages); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAuditPagesReadBoundedRows: paging through 10,000 audit entries, each
// GET /v1/audit (a page and the incremental verification) reads a number
// of rows bounded by its limit, not by the history's length, as
// PostgreSQL's own statement statistics count them; only ?verify=full
// reads everything.
func TestAuditPagesReadBoundedRows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A server of the test's own: pg_stat_statements must be preloaded.
	pg, err := pgcluster.Start(ctx, pgcluster.Options{ExtraConf: map[string]string{"shared_preload_libraries": "pg_stat_statements"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })

	// History written before the audit key: the seed and 9,997 bulk
	// versions; then the key, and two signed versions: 10,000 entries.
	old := newServerOn(t, pg)
	old.do("PUT", "/v1/policy", policyJSON(t, "acme"), "X-Author", "alice")
	if err := audittest.Append(ctx, audittest.Connect(t, ctx, old.pgURL), 9997, nil); err != nil {
		t.Fatal(err)
	}
	old.store.Close() // its listener would read versions written later
	key, err := auditkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s := serverOnURL(t, old.pgURL, store.WithAuditKeys(store.AuditKeys{Signing: key}))
	for _, action := range []string{"suspend", "resume"} {
		if r := s.do("POST", "/v1/tenants/acme/"+action, ""); r.status != 200 {
			t.Fatalf("%s: %d %s", action, r.status, r.raw)
		}
	}
	stats := audittest.Connect(t, ctx, s.pgURL)
	if _, err := stats.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		t.Fatal(err)
	}
	reset := func() {
		t.Helper()
		if _, err := stats.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
			t.Fatal(err)
		}
	}

	reset()
	r := s.do("GET", "/v1/audit?verify=full&limit=1", "")
	full := costSince(t, ctx, stats)
	if r.status != 200 || r.body["verified"] != true || r.num("checked") != 10000 || r.num("keyed_from_seq") != 9999 {
		t.Fatalf("full verification: %d %s", r.status, r.raw)
	}
	if full.rows < 10000 {
		t.Fatalf("the full verification read %d rows: the statistics do not count what they should", full.rows)
	}
	var tablePages int64
	if err := stats.QueryRow(ctx, `SELECT (pg_relation_size('tenantguard_cp.audit') + pg_relation_size('tenantguard_cp.versions'))
		/ current_setting('block_size')::bigint`).Scan(&tablePages); err != nil {
		t.Fatal(err)
	}
	t.Logf("full verification of 10,000 entries: %d rows, %d page reads; the tables have %d pages", full.rows, full.pages, tablePages)

	const limit = 100
	var prevHash string
	seq, writes := int64(0), 0
	var worst statementCost
	for page := 0; ; page++ {
		if page%20 == 10 {
			// A write between pages: the next incremental check has it to verify.
			if r := s.do("POST", fmt.Sprintf("/v1/tenants/acme/%s", []string{"suspend", "resume"}[writes%2]), ""); r.status != 200 {
				t.Fatalf("write: %d %s", r.status, r.raw)
			}
			writes++
		}
		path := fmt.Sprintf("/v1/audit?limit=%d", limit)
		if page > 0 {
			path += "&cursor=" + url.QueryEscape(r.body["next_cursor"].(string))
		}
		reset()
		r = s.do("GET", path, "")
		c := costSince(t, ctx, stats)
		if r.status != 200 {
			t.Fatalf("page %d: %d %s", page, r.status, r.raw)
		}
		// The page: limit+2 rows at most (the cursor's entry, one more to
		// tell whether there are more). The incremental check: its planner
		// settings (a row), the checkpoint's entry and a write's new one,
		// the head. The listener's read of a version just written.
		if c.rows > limit+2+1+2+1+1 || c.pages > tablePages/10 {
			rows, _ := stats.Query(ctx, `SELECT calls, rows, shared_blks_hit + shared_blks_read, query FROM pg_stat_statements
				WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`)
			for rows.Next() {
				var calls, n, pages int64
				var q string
				_ = rows.Scan(&calls, &n, &pages, &q)
				t.Logf("%d calls, %d rows, %d pages: %s", calls, n, pages, q)
			}
			t.Fatalf("page %d read %d rows, %d pages (the tables have %d pages)", page, c.rows, c.pages, tablePages)
		}
		if r.body["verified"] != true || r.body["verification"] != "incremental" {
			t.Fatalf("page %d: verified %v by a %v check: %s", page, r.body["verified"], r.body["verification"], r.body["problem"])
		}
		worst.rows, worst.pages = max(worst.rows, c.rows), max(worst.pages, c.pages)
		for _, x := range r.body["entries"].([]any) {
			e := x.(map[string]any)
			seq++
			if int64(e["seq"].(float64)) != seq || (prevHash != "" && e["prev_hash"] != prevHash) {
				t.Fatalf("page %d: entry %v after seq %d", page, e["seq"], seq-1)
			}
			prevHash = e["hash"].(string)
		}
		if r.body["more"] != true {
			break
		}
	}
	if seq != int64(10000+writes) {
		t.Fatalf("paged %d entries, want %d", seq, 10000+writes)
	}
	t.Logf("%d requests of %d entries: at most %d rows and %d page reads each", (seq+limit-1)/limit, limit, worst.rows, worst.pages)
}
