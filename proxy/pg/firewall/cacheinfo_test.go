package firewall

import (
	"reflect"
	"strings"
	"testing"
)

// cacheCase is a query and what the result cache must learn of it.
type cacheCase struct {
	query     string
	cacheable bool
	reads     string // relations read, comma-separated
	writes    string // relations written, comma-separated
	funcs     string // unknown functions, comma-separated
	unknown   bool   // WritesUnknown
}

var cacheCases = []cacheCase{
	{query: "SELECT * FROM orders WHERE id = 1", cacheable: true, reads: "orders"},
	{query: "SELECT o.item, p.price FROM public.orders o JOIN plans p ON p.name = o.item WHERE o.id = $1", cacheable: true, reads: "public.orders,plans"},
	{query: "SELECT count(*), sum(amount), max(item) FROM orders GROUP BY tenant_id HAVING count(*) > 1 ORDER BY 1 LIMIT 10", cacheable: true, reads: "orders"},
	{query: "SELECT lower(item), coalesce(amount, 0), CASE WHEN amount > 10 THEN 'big' END FROM orders", cacheable: true, reads: "orders"},
	{query: "SELECT * FROM orders WHERE id IN (SELECT order_id FROM lines WHERE qty > 2)", cacheable: true, reads: "orders,lines"},
	{query: "SELECT 1", cacheable: true},
	{query: "VALUES (1), (2)", cacheable: true},
	{query: "SELECT $1::int + 1", cacheable: true},
	{query: "SELECT '2024-01-01'::date, $1::timestamptz", cacheable: true},
	{query: "SELECT to_char(created, 'YYYY') FROM orders", cacheable: true, reads: "orders"},
	{query: "SELECT tenantguard.current_tenant()", cacheable: true},
	{query: "SELECT row_number() OVER (ORDER BY id) FROM orders", cacheable: true, reads: "orders"},
	{query: "SELECT * FROM unnest(ARRAY[1,2]) AS u(x)", cacheable: true},
	{query: "SELECT a.x FROM (SELECT id AS x FROM orders) a", cacheable: true, reads: "orders"},
	{query: "SELECT my_stable(x) FROM orders", cacheable: true, reads: "orders", funcs: "my_stable"},
	{query: "SELECT app.price_of(item) FROM orders", cacheable: true, reads: "orders", funcs: "app.price_of"},

	// CTE names are not tables, in scope only.
	{query: "WITH o AS (SELECT * FROM orders) SELECT * FROM o", cacheable: true, reads: "orders"},
	{query: "WITH orders AS (SELECT * FROM orders) SELECT * FROM orders", cacheable: true, reads: "orders"},
	{query: "WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM a) SELECT * FROM b", cacheable: true},
	{query: "WITH b AS (SELECT * FROM a), a AS (SELECT 1) SELECT * FROM b", cacheable: true, reads: "a"},
	{query: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", cacheable: true},
	{query: "SELECT * FROM x, (WITH x AS (SELECT 1) SELECT * FROM x) s", cacheable: true, reads: "x"},
	{query: "SELECT * FROM public.o", cacheable: true, reads: "public.o"},

	// Not cacheable: volatile, session, time.
	{query: "SELECT now()"},
	{query: "SELECT * FROM orders WHERE created > now() - interval '1 day'", reads: "", writes: ""},
	{query: "SELECT random()"},
	{query: "SELECT nextval('s')"},
	{query: "SELECT clock_timestamp()"},
	{query: "SELECT txid_current()"},
	{query: "SELECT pg_advisory_lock(1)"},
	{query: "SELECT pg_try_advisory_xact_lock(1)"},
	{query: "SELECT current_setting('search_path')"},
	{query: "SELECT CURRENT_DATE"},
	{query: "SELECT * FROM orders WHERE d > current_timestamp"},
	{query: "SELECT LOCALTIMESTAMP"},
	{query: "SELECT current_user"},
	{query: "SELECT age(created) FROM orders"},
	{query: "SELECT created::date FROM orders"},
	{query: "SELECT CAST(item AS timestamptz) FROM orders"},
	{query: "SELECT 'orders'::regclass"},
	{query: "SELECT x::my_domain FROM t"},
	{query: "SELECT gen_random_uuid()"},

	// Not cacheable: locks, writes, shapes.
	{query: "SELECT * FROM orders FOR UPDATE"},
	{query: "SELECT * FROM orders FOR SHARE SKIP LOCKED"},
	{query: "SELECT * INTO t2 FROM orders", writes: "", unknown: true},
	{query: "SELECT * FROM orders TABLESAMPLE BERNOULLI (10)"},
	{query: "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", writes: "orders"},
	{query: "WITH i AS (INSERT INTO log VALUES (1) RETURNING *) SELECT * FROM orders", writes: "log"},
	{query: "SELECT 1; SELECT 2"},
	{query: "SELECT * FROM pg_temp.t"},
	{query: "SELECT a OPERATOR(myschema.+) b FROM t"},
	{query: "SELECT xmlelement(name a)"},
	{query: "EXPLAIN SELECT 1"},
	{query: "SHOW search_path"},
	{query: "SELECT * FROM otherdb.public.orders"},

	// Writes.
	{query: "INSERT INTO orders (item) VALUES ('x')", writes: "orders"},
	{query: "UPDATE public.orders SET amount = 1 WHERE id = 2", writes: "public.orders"},
	{query: "DELETE FROM orders USING plans WHERE plans.name = orders.item", writes: "orders"},
	{query: "MERGE INTO orders o USING src s ON o.id = s.id WHEN MATCHED THEN UPDATE SET amount = s.amount", writes: "orders"},
	{query: "COPY orders FROM STDIN", writes: "orders"},
	{query: "INSERT INTO orders (item) VALUES (my_func())", writes: "orders", funcs: "my_func"},
	{query: "INSERT INTO orders (id) VALUES (nextval('s'))", writes: "orders"},
	{query: "SELECT my_writer()", cacheable: true, funcs: "my_writer"},
	{query: "CALL refresh_all()", funcs: "refresh_all", unknown: true},
	{query: "ALTER TABLE orders ADD COLUMN x int", unknown: true},
	{query: "CREATE TABLE t (x int)", unknown: true},
	{query: "CREATE TEMP TABLE t (x int)"},
	{query: "BEGIN; UPDATE a SET x = 1; UPDATE b.c SET y = 2; COMMIT", writes: "a,b.c"},
}

func TestCacheInfo(t *testing.T) {
	f := newTestFirewall(t)
	for _, tc := range cacheCases {
		t.Run(tc.query, func(t *testing.T) {
			v := f.Check(tc.query)
			if v.Refused() {
				t.Fatalf("refused (%s): %s", v.Rule, v.Reason)
			}
			ci := v.Cache
			if ci == nil {
				t.Fatal("no cache info")
			}
			if ci.Cacheable != tc.cacheable {
				t.Fatalf("cacheable %v (%s), want %v", ci.Cacheable, ci.Reason, tc.cacheable)
			}
			if !ci.Cacheable && ci.Reason == "" {
				t.Fatal("not cacheable without a reason")
			}
			if tc.cacheable {
				if got := joinRelations(ci.Reads); got != tc.reads {
					t.Errorf("reads %q, want %q", got, tc.reads)
				}
			}
			if got := joinRelations(ci.Writes); got != tc.writes {
				t.Errorf("writes %q, want %q", got, tc.writes)
			}
			if got := strings.Join(ci.Functions, ","); got != tc.funcs {
				t.Errorf("functions %q, want %q", got, tc.funcs)
			}
			if ci.WritesUnknown != tc.unknown {
				t.Errorf("writes unknown %v, want %v", ci.WritesUnknown, tc.unknown)
			}
		})
	}
}

func joinRelations(rs []Relation) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, ",")
}

// TestCacheInfoSettingsAndBegin: what SET and BEGIN tell the cache.
func TestCacheInfoSettingsAndBegin(t *testing.T) {
	f := newTestFirewall(t)
	for _, tc := range []struct {
		query    string
		settings []string
		local    bool
		begin    bool
		readOnly int8
		iso      string
		ddl      bool
	}{
		{query: "SET search_path = app, public", settings: []string{"search_path"}},
		{query: "SET LOCAL TimeZone = 'UTC'", settings: []string{"timezone"}, local: true},
		{query: "SET TRANSACTION READ ONLY", settings: []string{"transaction"}, local: true},
		{query: "SET TIME ZONE 'UTC'", settings: []string{"timezone"}},
		{query: "RESET extra_float_digits", settings: []string{"extra_float_digits"}},
		{query: "BEGIN", begin: true},
		{query: "BEGIN READ ONLY", begin: true, readOnly: 1},
		{query: "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", begin: true, readOnly: 1, iso: "repeatable read"},
		{query: "BEGIN READ WRITE", begin: true, readOnly: -1},
		{query: "COMMIT"},
		{query: "DECLARE c CURSOR FOR SELECT 1", ddl: true},
		{query: "CREATE TEMP TABLE t (x int)", ddl: true},
	} {
		t.Run(tc.query, func(t *testing.T) {
			ci := f.Check(tc.query).Cache
			if ci == nil {
				t.Fatal("no cache info")
			}
			if !reflect.DeepEqual(ci.Settings, tc.settings) || ci.SettingsLocal != tc.local {
				t.Errorf("settings %q local %v, want %q %v", ci.Settings, ci.SettingsLocal, tc.settings, tc.local)
			}
			if ci.Begin != tc.begin || ci.BeginReadOnly != tc.readOnly || ci.BeginIsolation != tc.iso {
				t.Errorf("begin %v %d %q, want %v %d %q", ci.Begin, ci.BeginReadOnly, ci.BeginIsolation, tc.begin, tc.readOnly, tc.iso)
			}
			if ci.DDL != tc.ddl {
				t.Errorf("ddl %v, want %v", ci.DDL, tc.ddl)
			}
		})
	}
}

func TestMentionsCurrentTime(t *testing.T) {
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"SELECT * FROM t WHERE d > '2024-01-01'", false},
		{"SELECT * FROM t WHERE d > 'now'", true},
		{"SELECT * FROM t WHERE d > ' NOW '::timestamptz", true},
		{"SELECT 'Today'::date", true},
		{"SELECT 'tomorrow'", true},
		{"SELECT timestamp 'yesterday'", true},
		{"SELECT E'n\\ow'::date", true},
		{"SELECT $$now$$::date", true},
		{"SELECT $x$TODAY$x$", true},
		{"SELECT known, snow FROM now_table", false}, // identifiers are not literals
		{"SELECT \"now\" FROM t", false},
		{"SELECT 'infinity'::date, 'epoch'::timestamp", false},
		{"SELECT U&'\\006Eow'", true}, // unsure: the lexer leaves U& escapes to the parser
		{"SELECT 'unterminated", true},
	} {
		if got := MentionsCurrentTime(tc.text); got != tc.want {
			t.Errorf("MentionsCurrentTime(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
	for _, tc := range []struct {
		v    string
		want bool
	}{{"2024-01-01", false}, {"now", true}, {"NoW", true}, {" today ", true}, {"no", false}, {"", false}, {"yesterday", true}} {
		if got := ValueMentionsCurrentTime([]byte(tc.v)); got != tc.want {
			t.Errorf("ValueMentionsCurrentTime(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
