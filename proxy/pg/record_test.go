package pg_test

import (
	"github.com/tenantguard/tenantguard/test/sessionfake"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
)

// TestSessionRecord: every Query and Parse of a token session is recorded
// with its statement fingerprint and, when refused with 42501, the rule.
func TestSessionRecord(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	fs := sessionfake.New()
	p := startIsolated(t, func(c *proxypgConfig) { c.Sessions = fs })
	tok := fs.Issue("acme", nil)
	c := p.connect(t, p.url("acme", tok))
	pc := c.PgConn()
	simple := func(sql, code string) {
		t.Helper()
		_, err := pc.Exec(ctx, sql).ReadAll()
		if code == "" && err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if code != "" {
			assertSQLState(t, err, code)
		}
	}
	simple("SELECT item FROM orders WHERE amount > 10", "")
	simple("SELECT item FROM orders WHERE amount > 20", "")
	simple("SELECT set_config('tenantguard.binding', 'globex', false)", "42501")
	simple("SET statement_timeout = 0", "42501")
	if err := pc.ExecParams(ctx, "SELECT item FROM orders WHERE amount > $1", [][]byte{[]byte("5")}, nil, nil, nil).Read().Err; err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Prepare(ctx, "byitem", "SELECT amount FROM orders WHERE item = $1", nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // Bind and Execute only: nothing new to screen
		if err := pc.ExecPrepared(ctx, "byitem", [][]byte{[]byte("anvil")}, nil, nil).Read().Err; err != nil {
			t.Fatal(err)
		}
	}
	simple("SELEC 1", "42601")

	got := fs.Lease(t, tok, 0).Recorded()
	wantRules := []string{"", "", "tenant-binding", "statement-timeout", "", "", ""}
	if len(got) != len(wantRules) {
		t.Fatalf("recorded %d requests, want %d: %+v", len(got), len(wantRules), got)
	}
	for i, r := range got {
		if r.Rule != wantRules[i] {
			t.Errorf("record %d: rule %q, want %q", i, r.Rule, wantRules[i])
		}
		if r.Fingerprint == 0 {
			t.Errorf("record %d: no fingerprint", i)
		}
	}
	// Same statement up to constants and parameters: one fingerprint.
	if got[0].Fingerprint != got[1].Fingerprint || got[0].Fingerprint != got[4].Fingerprint {
		t.Errorf("fingerprints differ for one statement shape: %x %x %x", got[0].Fingerprint, got[1].Fingerprint, got[4].Fingerprint)
	}
	seen := map[uint64]bool{}
	for _, i := range []int{0, 2, 3, 5, 6} {
		if seen[got[i].Fingerprint] {
			t.Errorf("record %d shares a fingerprint with a different statement", i)
		}
		seen[got[i].Fingerprint] = true
	}

	// A static login has no lease; nothing is recorded for it, and it works.
	static := p.connect(t, p.acmeURL())
	if _, err := static.PgConn().Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if n := len(fs.Lease(t, tok, 0).Recorded()); n != len(wantRules) {
		t.Fatalf("recorded %d, want %d", n, len(wantRules))
	}
}

// TestSessionRecordWithoutIsolation: with the firewall off there is no
// fingerprint, but requests are still counted.
func TestSessionRecordWithoutIsolation(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	fs := sessionfake.New()
	p := startProxy(t, upstream(t), func(c *proxypg.Config) { c.Sessions = fs })
	tok := fs.Issue("globex", nil)
	c := p.connect(t, p.url("globex", tok))
	for _, q := range []string{"SELECT 1", "SELECT 2"} {
		if _, err := c.PgConn().Exec(ctx, q).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	got := fs.Lease(t, tok, 0).Recorded()
	if len(got) != 2 || got[0] != (sessionfake.Record{}) || got[1] != (sessionfake.Record{}) {
		t.Fatalf("recorded %+v", got)
	}
}

// TestSessionRecordAllocs: recording adds no allocation per query: a query
// through a token session allocates (client and proxy together, in this
// process) no more than one through a static login.
func TestSessionRecordAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocations")
	}
	ctx := ctxT(t, 30*time.Second)
	fs := sessionfake.New()
	p := startIsolated(t, func(c *proxypgConfig) { c.Sessions = fs })
	measure := func(c *pgconn.PgConn) float64 {
		args := [][]byte{[]byte("50")}
		query := func() {
			if err := c.ExecParams(ctx, "SELECT item FROM orders WHERE amount > $1", args, nil, nil, nil).Read().Err; err != nil {
				t.Fatal(err)
			}
		}
		query() // warm the verdict cache
		return testing.AllocsPerRun(300, query)
	}
	static := measure(p.connect(t, p.acmeURL()).PgConn())
	token := measure(p.connect(t, p.url("acme", fs.Issue("acme", nil))).PgConn())
	t.Logf("allocations per query: static login %.1f, token login %.1f", static, token)
	if token > static+1 {
		t.Fatalf("a token session allocates %.1f per query, a static one %.1f", token, static)
	}
}
