package firewall

import (
	"strings"
	"testing"
)

func shapeOf(t *testing.T, text string) (string, bool) {
	t.Helper()
	s, ok := appendShape(nil, text)
	return string(s), ok
}

// TestShapeShared: texts that differ only in constants, parameter numbers,
// whitespace, comments and the case of keywords or unquoted identifiers
// share a shape.
func TestShapeShared(t *testing.T) {
	for _, tc := range []struct{ name, a, b string }{
		{"pgbench -S", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"},
		{"case of keywords and identifiers", "select ABalance from PGBENCH_ACCOUNTS where aid = 1", "SELECT abalance FROM pgbench_accounts WHERE AID = 2"},
		{"whitespace and comments", "SELECT a FROM t WHERE b = 1", "/* hi */ SELECT\ta\nFROM t -- x\nWHERE b=/**/7"},
		{"string contents", "SELECT * FROM orders WHERE tenant_id = 'acme'", "SELECT * FROM orders WHERE tenant_id = 'it''s /* not a comment */'"},
		{"E string contents", `SELECT E'a\n'`, `SELECT e'\\\''`},
		{"dollar quote contents", "SELECT $$x$$", "SELECT $tag$ $$ ' \" $tag$"},
		{"parameter numbers", "UPDATE t SET a = $1 WHERE id = $2", "UPDATE t SET a = $7 WHERE id = $1"},
		{"integers within int32", "SELECT 1 LIMIT 10", "SELECT 2147483647 LIMIT 0"},
		{"numerics", "SELECT 1.5", "SELECT 99999999999"},
		{"set_config arguments", "SELECT set_config('a', 'b', false)", "SELECT set_config('tenantguard.binding', 'globex', false)"},
		{"current_setting argument", "SELECT current_setting('x')", "SELECT current_setting('tenantguard.binding')"},
		{"advisory lock key", "SELECT pg_advisory_lock(1)", "SELECT pg_advisory_lock(2)"},
		{"statement after SET is masked again", "SET x = 1; SELECT 1", "set x = 1; select 2"},
		{"float outside a type", "SELECT float8in('1') + 1", "SELECT float8in('2') + 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, aok := shapeOf(t, tc.a)
			b, bok := shapeOf(t, tc.b)
			if !aok || !bok {
				t.Fatalf("unsure: %v %v", aok, bok)
			}
			if a != b {
				t.Fatalf("shapes differ:\n%q\n%q", a, b)
			}
		})
	}
}

// TestShapeDistinct: texts whose verdicts may differ, or whose constants
// the parser reads, do not share a shape.
func TestShapeDistinct(t *testing.T) {
	for _, tc := range []struct{ name, a, b string }{
		{"identifier", "SELECT a FROM t", "SELECT b FROM t"},
		{"function name", "SELECT f(1)", "SELECT set_config(1)"},
		{"quoted identifiers keep their case", `SELECT "Abc"`, `SELECT "abc"`},
		{"quoted and unquoted", `SELECT "select"`, `SELECT select`},
		{"int32 and beyond", "FETCH 2147483647 FROM c", "FETCH 2147483648 FROM c"},
		{"integer and numeric", "SELECT 1", "SELECT 1.0"},
		{"constant and parameter", "SELECT 1", "SELECT $1"},
		{"string kinds", "SELECT 'a'", "SELECT E'a'"},
		{"string and dollar quote", "SELECT 'a'", "SELECT $$a$$"},
		{"bit and hex", "SELECT B'1'", "SELECT X'1'"},
		{"token boundary", "SELECT ab", "SELECT a b"},
		{"operator run", "SELECT a =- 1", "SELECT a = - 1"},
		{"E prefix needs adjacency", "SELECT E'a'", "SELECT E 'a'"},
		{"copy file name", "COPY orders TO '/tmp/x'", "COPY orders TO ''"},
		{"copy options", "COPY orders FROM STDIN WITH (FORMAT 'csv')", "COPY orders FROM STDIN WITH (FORMAT 'text')"},
		{"lower-case copy", "copy (select 1) to '/a'", "copy (select 1) to '/b'"},
		{"set value", "SET application_name = 'a'", "SET application_name = 'b'"},
		{"set local value", "BEGIN; SET LOCAL statement_timeout = 0", "BEGIN; SET LOCAL statement_timeout = 1"},
		{"explain option value", "EXPLAIN (COSTS 'on') SELECT 1", "EXPLAIN (COSTS 'off') SELECT 1"},
		{"regclass cast", "SELECT 'orders'::regclass", "SELECT 'tenantguard.binding_key'::regclass"},
		{"regproc cast before its string", "SELECT CAST('pg_sleep' AS regproc)", "SELECT CAST('pg_terminate_backend' AS regproc)"},
		{"quoted regclass", `SELECT 'a'::"regclass"`, `SELECT 'b'::"regclass"`},
		{"to_regclass", "SELECT to_regclass('a')", "SELECT to_regclass('b')"},
		{"escaped unicode identifier", `SELECT 'a'::U&"\0072egclass"`, `SELECT 'b'::U&"\0072egclass"`},
		{"float precision", "SELECT 1::float(24)", "SELECT 1::float(54)"},
		{"column number", "ALTER TABLE t ALTER COLUMN 1 SET STATISTICS 100", "ALTER TABLE t ALTER COLUMN 0 SET STATISTICS 100"},
		{"column number without COLUMN", "ALTER INDEX i ALTER 1 SET STATISTICS 100", "ALTER INDEX i ALTER 40000 SET STATISTICS 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, aok := shapeOf(t, tc.a)
			b, bok := shapeOf(t, tc.b)
			if !aok || !bok {
				t.Fatalf("unsure: %v %v", aok, bok)
			}
			if a == b {
				t.Fatalf("shapes equal: %q", a)
			}
		})
	}
}

// TestShapeUnsure: what only the real parser may judge.
func TestShapeUnsure(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"string continued across a newline", "SELECT 'a'\n'b'"},
		{"string continued after a comment line", "SELECT 'a' -- c\n'b'"},
		{"adjacent strings", "SELECT 'a' 'b'"},
		{"string then dollar quote", "SELECT 'a' $$b$$"},
		{"UESCAPE", `SELECT U&'d!0061' UESCAPE '!'`},
		{"UESCAPE on an identifier", `SELECT U&"d!0061" uescape '!'`},
		{"lexer unsure", "SELECT 0x10"},
		{"comment inside WITH TIME ZONE", "SELECT time with /* c */ time zone '12:00'"},
		{"comment inside NOT IN", "SELECT 1 WHERE 1 NOT -- c\n IN (2)"},
		{"comment after NULLS", "SELECT 1 ORDER BY 1 NULLS/**/FIRST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, ok := shapeOf(t, tc.text); ok {
				t.Fatalf("shape %q for %q", s, tc.text)
			}
		})
	}
}

// TestShapeFingerprint: the reported fingerprint merges constants with
// parameters and kept constants with masked ones, and nothing else.
func TestShapeFingerprint(t *testing.T) {
	fp := func(text string) uint64 {
		s, ok := appendShape(nil, text)
		if !ok {
			t.Fatalf("unsure: %q", text)
		}
		return shapeFingerprint(s)
	}
	if fp("SELECT a FROM t WHERE b = 1") != fp("select a from t where b = $3") {
		t.Error("constant and parameter fingerprints differ")
	}
	if fp("SET application_name = 'a'") != fp("SET application_name = 'b'") {
		t.Error("kept constants change the fingerprint")
	}
	if fp("SELECT a FROM t WHERE b = 1") == fp("SELECT a FROM t WHERE c = 1") {
		t.Error("different statements share a fingerprint")
	}
}

// TestCheckByShape: a text of a known shape is answered from the cache,
// without the parser; the verdict is the parser's.
func TestCheckByShape(t *testing.T) {
	f := newTestFirewall(t)
	first := f.Check("SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
	f.cache.Wait()
	for i, q := range []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
		"select abalance from pgbench_accounts where aid=7 ; -- again",
	} {
		if v := f.Check(q); v != first {
			t.Fatalf("%d: %q not answered from the shape's cached verdict", i, q)
		}
	}
	if v := f.Check("SELECT abalance FROM pgbench_accounts WHERE aid = 1; SELECT set_config('a','b',false)"); v.Rule != "tenant-binding" {
		t.Fatalf("rule %q", v.Rule)
	}
}

// TestSyntaxErrorsNotSharedByShape: a syntax error's message can quote a
// constant; texts of the same shape never see another text's message.
func TestSyntaxErrorsNotSharedByShape(t *testing.T) {
	f := newTestFirewall(t)
	a := f.Check("SELECT 'secret of acme' 1")
	f.cache.Wait()
	b := f.Check("SELECT 'x' 2")
	if !a.Syntax || !b.Syntax {
		t.Fatalf("want syntax errors: %+v %+v", a, b)
	}
	if strings.Contains(b.Reason, "acme") || a.Fingerprint != b.Fingerprint {
		t.Fatalf("reason %q, fingerprints %x %x", b.Reason, a.Fingerprint, b.Fingerprint)
	}
	if c := f.Check("SELECT 'secret of acme' 1"); c.Reason != a.Reason {
		t.Fatalf("reason %q", c.Reason)
	}
}

// TestCheckInvalidUTF8BeforeShape: a string constant is masked in the
// shape, so invalid bytes inside one must be refused before the lookup.
func TestCheckInvalidUTF8BeforeShape(t *testing.T) {
	f := newTestFirewall(t)
	f.Check("SELECT 'caf'")
	f.cache.Wait()
	if v := f.Check("SELECT 'caf\xc3'"); v.Rule != "encoding" {
		t.Fatalf("rule %q", v.Rule)
	}
}

// TestFoldASCII: the eight-at-a-time fold agrees with a byte at a time on
// every byte value in every lane.
func TestFoldASCII(t *testing.T) {
	for c := 0; c < 256; c++ {
		for lane := 0; lane < 9; lane++ {
			b := []byte("aZ@[`{\xc3\x80" + "Q")
			b[lane] = byte(c)
			want := make([]byte, len(b))
			for i, x := range b {
				want[i] = x
				if 'A' <= x && x <= 'Z' {
					want[i] = x + 'a' - 'A'
				}
			}
			foldASCII(b)
			if string(b) != string(want) {
				t.Fatalf("byte %#x lane %d: %q, want %q", c, lane, b, want)
			}
		}
	}
}
