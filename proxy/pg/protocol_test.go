package pg_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var execModes = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"cache_statement", pgx.QueryExecModeCacheStatement},
	{"cache_describe", pgx.QueryExecModeCacheDescribe},
	{"describe_exec", pgx.QueryExecModeDescribeExec},
	{"exec", pgx.QueryExecModeExec},
	{"simple_protocol", pgx.QueryExecModeSimpleProtocol},
}

// TestPgxExecModes runs queries in every pgx QueryExecMode through
// transaction pooling, with several clients sharing few server connections
// so statements keep landing on connections that have not seen them.
func TestPgxExecModes(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.PoolSize = 2 })
	for _, tc := range execModes {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t, 30*time.Second)
			conns := make([]*pgx.Conn, 4)
			for i := range conns {
				cfg, err := pgx.ParseConfig(p.acmeURL())
				if err != nil {
					t.Fatal(err)
				}
				cfg.DefaultQueryExecMode = tc.mode
				conns[i], err = pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer conns[i].Close(ctx)
			}
			for round := 0; round < 5; round++ {
				for i, c := range conns {
					var n int
					var name string
					err := c.QueryRow(ctx, "SELECT qty, name FROM items WHERE tenant = $1 AND qty = $2", "acme", 10+i+round).Scan(&n, &name)
					if err != nil {
						t.Fatalf("round %d conn %d: %v", round, i, err)
					}
					if n != 10+i+round || name != fmt.Sprintf("item%d", n) {
						t.Fatalf("got %d %q", n, name)
					}
					// Several statements in one transaction, then a batch.
					tx, err := c.Begin(ctx)
					if err != nil {
						t.Fatal(err)
					}
					var sum int
					if err := tx.QueryRow(ctx, "SELECT sum(qty)::int FROM items WHERE qty <= $1", 10).Scan(&sum); err != nil {
						t.Fatal(err)
					}
					if sum != 55 {
						t.Fatalf("sum = %d", sum)
					}
					if err := tx.Commit(ctx); err != nil {
						t.Fatal(err)
					}
					b := &pgx.Batch{}
					b.Queue("SELECT $1::int + 1", 41)
					b.Queue("SELECT $1::text || 'x'", "y")
					br := c.SendBatch(ctx, b)
					var a int
					var s string
					if err := br.QueryRow().Scan(&a); err != nil {
						t.Fatal(err)
					}
					if err := br.QueryRow().Scan(&s); err != nil {
						t.Fatal(err)
					}
					if err := br.Close(); err != nil {
						t.Fatal(err)
					}
					if a != 42 || s != "yx" {
						t.Fatalf("batch got %d %q", a, s)
					}
				}
			}
		})
	}
}

// TestPreparedStatementsArePrivate shows a client cannot use another
// client's protocol-level statement, by its name or by the proxy's server name.
func TestPreparedStatementsArePrivate(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.PoolSize = 1 })
	ctx := ctxT(t, 20*time.Second)
	a := p.connect(t, p.acmeURL())
	b := p.connect(t, p.url("globex", globexSecret))
	if _, err := a.Prepare(ctx, "secret_stmt", "SELECT 'acme-only'::text"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := a.QueryRow(ctx, "secret_stmt").Scan(&got); err != nil || got != "acme-only" {
		t.Fatalf("owner: %q %v", got, err)
	}
	// The other client names the same statement at the protocol level.
	rr := b.PgConn().ExecPrepared(ctx, "secret_stmt", nil, nil, nil).Read()
	assertSQLState(t, rr.Err, "26000")
	// And the server-side name, which it could only guess.
	for _, name := range []string{"_tg_" + strings.Repeat("0", 24), "_tg_missing"} {
		rr = b.PgConn().ExecPrepared(ctx, name, nil, nil, nil).Read()
		assertSQLState(t, rr.Err, "26000")
	}
	// The owner keeps working, and so does the other client.
	if err := a.QueryRow(ctx, "secret_stmt").Scan(&got); err != nil || got != "acme-only" {
		t.Fatalf("owner after probe: %q %v", got, err)
	}
	var one int
	if err := b.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("other client: %v", err)
	}
	// Deallocating is per client too.
	if err := a.Deallocate(ctx, "secret_stmt"); err != nil {
		t.Fatal(err)
	}
	rr = a.PgConn().ExecPrepared(ctx, "secret_stmt", nil, nil, nil).Read()
	assertSQLState(t, rr.Err, "26000")
}

func assertSQLState(t *testing.T, err error, code string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("want SQLSTATE %s, got %v", code, err)
	}
	if pe.Code != code {
		t.Fatalf("want SQLSTATE %s, got %s: %s", code, pe.Code, pe.Message)
	}
	return pe
}

// TestErrorsInsideTransactions: an error aborts the transaction as in
// PostgreSQL, and the connection is usable after ROLLBACK.
func TestErrorsInsideTransactions(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, nil)
	ctx := ctxT(t, 20*time.Second)
	c := p.connect(t, p.acmeURL())
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		if _, err := c.Exec(ctx, "BEGIN", mode); err != nil {
			t.Fatal(err)
		}
		_, err := c.Exec(ctx, "SELECT 1/0", mode)
		assertSQLState(t, err, "22012")
		_, err = c.Exec(ctx, "SELECT 1", mode)
		assertSQLState(t, err, "25P02")
		if c.PgConn().TxStatus() != 'E' {
			t.Fatalf("tx status %q, want E", c.PgConn().TxStatus())
		}
		if _, err := c.Exec(ctx, "ROLLBACK", mode); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT 2", mode).Scan(&n); err != nil || n != 2 {
			t.Fatalf("after rollback: %v", err)
		}
	}
	// A syntax error outside a transaction.
	_, err := c.Exec(ctx, "SELEC 1")
	assertSQLState(t, err, "42601")
}

// TestCopyBothDirections runs COPY FROM STDIN and COPY TO STDOUT.
func TestCopyBothDirections(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, nil)
	ctx := ctxT(t, 30*time.Second)
	c := p.connect(t, p.acmeURL())
	if _, err := c.Exec(ctx, "TRUNCATE copy_target"); err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, 5000)
	for i := range rows {
		rows[i] = []any{int32(i), fmt.Sprintf("row %d", i)}
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"copy_target"}, []string{"a", "b"}, pgx.CopyFromRows(rows))
	if err != nil || n != 5000 {
		t.Fatalf("CopyFrom: %d %v", n, err)
	}
	// Text-format COPY FROM STDIN through the raw protocol, too.
	tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader("9001\tnine thousand one\n9002\t\\N\n"), "COPY copy_target (a, b) FROM STDIN")
	if err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("CopyFrom text: %v %v", tag, err)
	}
	var out bytes.Buffer
	tag, err = c.PgConn().CopyTo(ctx, &out, "COPY (SELECT a, b FROM copy_target ORDER BY a) TO STDOUT")
	if err != nil || tag.RowsAffected() != 5002 {
		t.Fatalf("CopyTo: %v %v", tag, err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 5002 || lines[0] != "0\trow 0" || lines[5001] != "9002\t\\N" {
		t.Fatalf("CopyTo output: %d lines, first %q last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	// A COPY that fails mid-stream leaves a usable connection.
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("not-a-number\tx\n"), "COPY copy_target (a, b) FROM STDIN")
	assertSQLState(t, err, "22P02")
	var cnt int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM copy_target").Scan(&cnt); err != nil || cnt != 5002 {
		t.Fatalf("count after failed copy: %d %v", cnt, err)
	}
}

// TestNotifications: NOTIFY reaches a listener inside a session-pooled
// connection, and NoticeResponse arrives as in PostgreSQL.
func TestNotificationsAndNotices(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.PoolMode = "session" })
	ctx := ctxT(t, 20*time.Second)
	var notices []string
	cfg, err := pgx.ParseConfig(p.acmeURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	listener, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	sender := p.connect(t, p.acmeURL())
	if _, err := listener.Exec(ctx, "LISTEN tg_events"); err != nil {
		t.Fatal(err)
	}
	if _, err := sender.Exec(ctx, "SELECT pg_notify('tg_events', 'hello')"); err != nil {
		t.Fatal(err)
	}
	n, err := listener.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Channel != "tg_events" || n.Payload != "hello" {
		t.Fatalf("notification %+v", n)
	}
	if _, err := listener.Exec(ctx, "DO $$ BEGIN RAISE NOTICE 'tg notice %', 7; END $$"); err != nil {
		t.Fatal(err)
	}
	if len(notices) != 1 || notices[0] != "tg notice 7" {
		t.Fatalf("notices %q", notices)
	}
}

// TestParameterStatus: a SET of a reported setting reaches the client as
// ParameterStatus, and the client keeps its value in transaction pooling.
func TestParameterStatus(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.PoolSize = 1 })
	ctx := ctxT(t, 20*time.Second)
	a := p.connect(t, p.acmeURL("application_name", "client-a", "timezone", "Asia/Tokyo"))
	b := p.connect(t, p.acmeURL("application_name", "client-b"))
	if got := a.PgConn().ParameterStatus("application_name"); got != "client-a" {
		t.Fatalf("startup application_name = %q", got)
	}
	for i := 0; i < 3; i++ {
		for _, tc := range []struct {
			c       *pgx.Conn
			app, tz string
		}{{a, "client-a", "Asia/Tokyo"}, {b, "client-b", "UTC"}} {
			var app, tz string
			if err := tc.c.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('TimeZone')").Scan(&app, &tz); err != nil {
				t.Fatal(err)
			}
			if app != tc.app || (tc.tz != "UTC" && tz != tc.tz) {
				t.Fatalf("round %d: got %q %q, want %q %q", i, app, tz, tc.app, tc.tz)
			}
		}
	}
	if _, err := a.Exec(ctx, "SET application_name = 'renamed'"); err != nil {
		t.Fatal(err)
	}
	if got := a.PgConn().ParameterStatus("application_name"); got != "renamed" {
		t.Fatalf("ParameterStatus after SET = %q", got)
	}
	var app string
	if err := b.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil || app != "client-b" {
		t.Fatalf("other client sees %q %v", app, err)
	}
	if err := a.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil || app != "renamed" {
		t.Fatalf("client keeps its SET: %q %v", app, err)
	}
}

// TestSessionStateDoesNotLeak: session settings, temp tables, advisory locks
// and cursors one client leaves on a pooled connection are gone when the
// next client gets that connection.
func TestSessionStateDoesNotLeak(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.PoolSize = 1 })
	ctx := ctxT(t, 20*time.Second)
	a := p.connect(t, p.acmeURL())
	b := p.connect(t, p.url("globex", globexSecret))
	for _, q := range []string{
		"SET statement_timeout = '4321ms'",
		"SET search_path = pg_catalog",
		"CREATE TEMP TABLE acme_scratch (x int)",
		"BEGIN; DECLARE acme_cur CURSOR WITH HOLD FOR SELECT 1; COMMIT",
		"SELECT pg_advisory_lock(4242)",
		"SELECT set_config('work_mem', '1234kB', false)",
	} {
		if _, err := a.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var timeout, path string
	if err := b.QueryRow(ctx, "SELECT current_setting('statement_timeout'), current_setting('search_path')").Scan(&timeout, &path); err != nil {
		t.Fatal(err)
	}
	if timeout == "4321ms" || path == "pg_catalog" {
		t.Fatalf("settings leaked to another tenant: statement_timeout=%s search_path=%s", timeout, path)
	}
	var temps, cursors int
	if err := b.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_class WHERE relname = 'acme_scratch')::int, (SELECT count(*) FROM pg_cursors WHERE name = 'acme_cur')::int").Scan(&temps, &cursors); err != nil {
		t.Fatal(err)
	}
	if temps != 0 || cursors != 0 {
		t.Fatalf("temp tables %d, cursors %d left for another tenant", temps, cursors)
	}
	var locks int
	var workMem string
	if err := b.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())::int, current_setting('work_mem')").Scan(&locks, &workMem); err != nil {
		t.Fatal(err)
	}
	if locks != 0 || workMem == "1234kB" {
		t.Fatalf("advisory locks %d, work_mem %s left for another tenant", locks, workMem)
	}
	// The same through the extended protocol, with a named statement.
	if _, err := a.Exec(ctx, "SELECT pg_advisory_lock($1)", 4343); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(ctx, "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").Scan(&locks); err != nil || locks != 0 {
		t.Fatalf("advisory lock via prepared statement leaked: %d %v", locks, err)
	}
}

// TestPsql drives the real psql client, including COPY from its stdin.
func TestPsql(t *testing.T) {
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Fatal("psql not found: install postgresql-client")
	}
	pg := upstream(t)
	p := startProxy(t, pg, nil)
	ctx := ctxT(t, 30*time.Second)
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, psql, append([]string{p.acmeURL(), "-X", "-v", "ON_ERROR_STOP=1", "-At"}, args...)...)
		cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=5")
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("psql %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if got := run("", "-c", "SELECT current_user = 'tg_app', 40 + 2"); strings.TrimSpace(got) != "t|42" {
		t.Fatalf("psql select: %q", got)
	}
	run("", "-c", "TRUNCATE copy_target")
	run("1\tone\n2\ttwo\n\\.\n", "-c", "COPY copy_target FROM STDIN")
	if got := run("", "-c", "COPY (SELECT a, b FROM copy_target ORDER BY a) TO STDOUT"); got != "1\tone\n2\ttwo\n" {
		t.Fatalf("psql copy out: %q", got)
	}
}

var tpsFailed = regexp.MustCompile(`number of failed transactions: (\d+)`)

// TestPgbench runs pgbench in every protocol mode with 16 clients through
// transaction pooling and requires zero failed transactions.
func TestPgbench(t *testing.T) {
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		t.Fatal("pgbench not found: install postgresql-client")
	}
	pg := upstream(t)
	ctx := ctxT(t, 2*time.Minute)
	if err := pg.CreateDatabase(ctx, "bench"); err != nil && !strings.Contains(err.Error(), "42P04") {
		t.Fatal(err) // 42P04: an earlier run (-count) made it
	}
	init := exec.CommandContext(ctx, pgbench, "-i", "-q", "-s", "1", pg.AdminURL("bench"))
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	if err := pg.Exec(ctx, "bench", "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "+appRole); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, pg, func(c *proxypgConfig) {
		c.PoolSize = 4
		c.Databases = append(c.Databases, proxypgDatabase{Name: "bench", URL: strings.Replace(c.Databases[0].URL, "/app?", "/bench?", 1)})
	})
	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			u := strings.Replace(p.acmeURL(), "/app?", "/bench?", 1)
			// One thread per client: in prepared mode pgbench prepares each
			// statement synchronously on first use, and with clients sharing
			// a thread that blocks the thread's other clients mid-transaction
			// while they hold server connections (so with fewer server
			// connections than clients it would deadlock through PgBouncer too).
			cmd := exec.CommandContext(ctx, pgbench, "-n", "-c", "16", "-j", "16", "-T", "2", "-M", mode, u)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
			}
			m := tpsFailed.FindSubmatch(out)
			if m == nil || string(m[1]) != "0" {
				t.Fatalf("pgbench -M %s failed transactions:\n%s", mode, out)
			}
			if !bytes.Contains(out, []byte("number of transactions actually processed")) {
				t.Fatalf("no transactions processed:\n%s", out)
			}
		})
	}
}
