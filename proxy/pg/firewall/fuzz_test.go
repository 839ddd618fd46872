package firewall

import (
	"bytes"
	"hash/fnv"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// fuzzSeedTexts seed FuzzFingerprint beside testdata/fuzz/FuzzFingerprint
// (workloads: pgbench, TPC-B, drivers) and every case of TestCheck.
var fuzzSeedTexts = []string{
	// The lexer's corners.
	`SELECT E'it\'s', e'a\\b', N'x', B'0101', X'1F', U&'abc', U&"d\0061t", $$a'b$$, $t$ $$ $t$`,
	"SELECT 1::float(24), 2::float(53), 3::FLOAT(1)",
	"ALTER TABLE orders ALTER COLUMN 2 SET STATISTICS 100",
	"SELECT 'orders'::regclass, CAST('pg_sleep' AS regprocedure), to_regclass('tenantguard.binding_key')",
	"COPY orders TO '/tmp/x'", "COPY orders TO ''", "COPY (SELECT 1) TO STDOUT WITH (FORMAT 'csv', DELIMITER ';')",
	"SET search_path = 'tenantguard', public", "SET TIME ZONE 'UTC'", "SET NAMES 'UTF8'", "RESET work_mem",
	"EXPLAIN (ANALYZE 'off', COSTS 1) SELECT 1", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE",
	"SELECT format('%I', 'pg_stat_activity')", "FETCH 2147483647 FROM c", "FETCH 2147483648 FROM c",
	"SELECT a <=> b, c @@ d, e =- 1, f !~~* g, 2 */ 3", "SELECT x::int, f(a := 1, b => 2), a[1:2]",
	"SELECT /* a /* b */ c */ 1 -- tail", "select a$1_b2, café, \"Quoted\"\"Ident\" from t",
	"SELECT 00000000002147483647, .5e+2, 1., 99999999999999999999",
	"PREPARE p(int) AS SELECT $1; EXECUTE p(1); DEALLOCATE p",
	"DECLARE c CURSOR WITH HOLD FOR SELECT 1; FETCH 10 FROM c; CLOSE c",
	"SELECT pg_advisory_lock(42), pg_advisory_xact_lock(1, 2)",
	"SELECT * FROM json_table('{}'::jsonb, '$' COLUMNS (a int PATH '$.a'))",
	"SELECT interval '1' day, interval(3) '1', time with time zone '12:00'",
	"SELECT 'a' \n 'b'", "SELECT 0x1F, 1_000",
}

// FuzzFingerprint is the differential test of the shape against the real
// parser: for a text the lexer is sure of, a variant with every masked
// constant replaced by another of its class, other whitespace and
// comments between tokens, and keywords and unquoted identifiers in
// another case must have the same shape, and then pg_query must give both
// the same verdict (and the same fingerprint of its own). The lexer's
// tokens must also match pg_query's scanner, token for token.
func FuzzFingerprint(f *testing.F) {
	for _, s := range fuzzSeedTexts {
		f.Add(s, uint64(0))
	}
	for _, tc := range checkCases {
		f.Add(tc.query, uint64(1))
	}
	for _, tc := range cacheCases {
		f.Add(tc.query, uint64(2))
	}
	fw, err := New(Config{BindingSetting: "tenantguard.binding", ProtectedSchema: "tenantguard"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(fw.Close)
	f.Fuzz(func(t *testing.T, text string, seed uint64) {
		if len(text) > 2000 || !utf8.ValidString(text) || strings.IndexByte(text, 0) >= 0 {
			return
		}
		shape, ok := appendShape(nil, text)
		if !ok {
			return
		}
		toks, ok := lexAll(text)
		if !ok {
			t.Fatalf("%q: shape without tokens", text)
		}
		if err := agreesWithScanner(text, toks); err != nil {
			t.Fatal(err)
		}
		pins := pinnedTokens(text)
		h := fnv.New64a()
		h.Write([]byte(text))
		rng := rand.New(rand.NewPCG(seed, h.Sum64()))
		for i := 0; i < 2; i++ {
			variant := shapeVariant(text, toks, pins, rng)
			vshape, ok := appendShape(nil, variant)
			if !ok || !bytes.Equal(shape, vshape) {
				t.Fatalf("variant of\n%q\n%q\nhas another shape (sure %v)", text, variant, ok)
			}
			a, b := fw.checkUncached(text), fw.checkUncached(variant)
			if d := verdictDiff(a, b); d != "" {
				t.Fatalf("one shape, two verdicts (%s):\n%q\n  %+v\n%q\n  %+v", d, text, *a, variant, *b)
			}
			if !a.Syntax && !utility(text) {
				// pg_query's fingerprint ignores constants but not the
				// values utility statements fold into fields (FETCH 10,
				// NOTIFY payloads): compared for plain DML only.
				fa, errA := pg_query.Fingerprint(text)
				fb, errB := pg_query.Fingerprint(variant)
				if errA != nil || errB != nil || fa != fb {
					t.Fatalf("pg_query fingerprints differ: %s %v / %s %v\n%q\n%q", fa, errA, fb, errB, text, variant)
				}
			}
		}
	})
}

// utility reports whether text holds a utility statement (or does not
// parse).
func utility(text string) bool {
	u, err := pg_query.IsUtilityStmt(text)
	if err != nil {
		return true
	}
	for _, x := range u {
		if x {
			return true
		}
	}
	return false
}

// verdictDiff names the first field in which two verdicts differ.
func verdictDiff(a, b *Verdict) string {
	switch {
	case a.Rule != b.Rule:
		return "rule"
	case a.Class != b.Class:
		return "class"
	case a.SessionState != b.SessionState:
		return "session state"
	case a.SQLPrepare != b.SQLPrepare:
		return "SQL prepare"
	case a.HoldCursor != b.HoldCursor:
		return "hold cursor"
	case a.SetsStatementTimeout != b.SetsStatementTimeout:
		return "statement timeout"
	case a.Syntax != b.Syntax:
		return "syntax"
	case !a.Syntax && a.Reason != b.Reason:
		// Reasons name functions, relations and settings, never
		// constants: the shape shares them between texts.
		return "reason"
	case !reflect.DeepEqual(a.Cache, b.Cache):
		// The result cache's view is shared by shape too.
		return "cache info"
	}
	return ""
}

// pinnedTokens returns the start offsets of the constants whose bytes the
// shape keeps.
func pinnedTokens(text string) map[int]bool {
	pins := map[int]bool{}
	pin := func(t token) { pins[t.start] = true }
	if _, st := buildShape(nil, text, false, pin); st == shapeRestartPinned {
		clear(pins)
		buildShape(nil, text, true, pin)
	}
	return pins
}

// Replacement constants, per class: valid and invalid values alike (the
// raw parser checks none of them), edge values, and strings that look like
// comments or name protected objects.
var variantConstants = map[tokKind][]string{
	tkParam:          {"$1", "$2", "$9", "$100", "$0"},
	tkInteger:        {"0", "1", "42", "2147483647", "0007", "100"},
	tkNumeric:        {"1.5", ".5", "1.", "1e10", "2147483648", "99999999999999999999", "0.0", "1E-5"},
	tkString:         {"''", "'x'", "'it''s'", "'tenantguard.binding'", "'/etc/passwd'", "'pg_terminate_backend'", "'globex'", "'😀 ü'", "'a\nb'", "'--'", "'/*'", "'\"'"},
	tkEscapeString:   {"E''", "e'x'", `E'it\'s'`, `E'\\'`, `E'\n\t'`, "E'ü'", `e'\''`},
	tkNationalString: {"N''", "n'x'", "N'it''s'"},
	tkBitString:      {"B''", "b'0101'", "B'xyz'"},
	tkHexString:      {"X''", "x'1F'", "X'zz'"},
	tkUnicodeString:  {"U&''", "u&'x'", "U&'it''s'"},
	tkDollarString:   {"$$$$", "$$x$$", "$a$ $$ $a$", "$_1$'$_1$", "$ü$ $ü$"},
}

var (
	variantSpaces = []string{" ", "\n", "\t", "  ", " /* c */ ", " /* /* n */ */ ", " -- c\n", "\r\n", "\f"}
	variantBlanks = []string{" ", "\n", "\t", "\r\n", "\f"}
)

// shapeVariant rebuilds text from its tokens with other masked constants,
// other space between tokens, and other letter case in unquoted words.
func shapeVariant(text string, toks []token, pins map[int]bool, rng *rand.Rand) string {
	var b strings.Builder
	if rng.IntN(2) == 0 {
		b.WriteString(variantSpaces[rng.IntN(len(variantSpaces))])
	}
	for i, t := range toks {
		if i > 0 {
			spaces := variantSpaces
			if p := toks[i-1]; p.kind == tkIdent && classifyWord(text[p.start:p.end]) == wordLookahead {
				spaces = variantBlanks // a comment there is the parser's business
			}
			b.WriteString(spaces[rng.IntN(len(spaces))])
		}
		src := text[t.start:t.end]
		switch {
		case t.kind == tkIdent:
			for j := 0; j < len(src); j++ {
				c := src[j]
				if ('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') && rng.IntN(2) == 0 {
					c ^= 0x20
				}
				b.WriteByte(c)
			}
		case t.kind.constant() && !pins[t.start]:
			pool := variantConstants[t.kind]
			b.WriteString(pool[rng.IntN(len(pool))])
		default:
			b.WriteString(src)
		}
	}
	if rng.IntN(2) == 0 {
		b.WriteString(variantSpaces[rng.IntN(len(variantSpaces))])
	}
	return b.String()
}
