package firewall

import (
	"fmt"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

var kindNames = map[tokKind]string{
	tkIdent: "ident", tkQuotedIdent: "qident", tkUnicodeIdent: "uident", tkOp: "op", tkPunct: "punct",
	tkParam: "param", tkInteger: "int", tkNumeric: "num", tkString: "str", tkEscapeString: "estr",
	tkNationalString: "nstr", tkBitString: "bstr", tkHexString: "xstr", tkUnicodeString: "ustr",
	tkDollarString: "dstr",
}

// lexAll returns text's tokens, or ok=false when the lexer is unsure.
func lexAll(text string) (toks []token, ok bool) {
	l := lexer{s: text}
	for {
		tok, st := l.next()
		switch st {
		case lexEOF:
			return toks, true
		case lexUnsure:
			return toks, false
		}
		toks = append(toks, tok)
	}
}

func renderTokens(text string, toks []token) string {
	var b strings.Builder
	for i, t := range toks {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%s", kindNames[t.kind], text[t.start:t.end])
	}
	return b.String()
}

// TestLexer: the lexer's tokens for the tricky corners of scan.l, and
// what it refuses to decide ("unsure").
func TestLexer(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
	}{
		{"keywords and identifiers", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
			"ident:SELECT ident:abalance ident:FROM ident:pgbench_accounts ident:WHERE ident:aid op:= int:48213 punct:;"},
		{"identifier with dollar and digits", "select a$1_b2 from t", "ident:select ident:a$1_b2 ident:from ident:t"},
		{"multibyte identifier", "select café, naïve", "ident:select ident:café punct:, ident:naïve"},
		{"no-break space is an identifier character", "select\u00a01", "ident:select\u00a01"},
		{"quoted identifier with doubled quote", `select "a""b" from "T"`, `ident:select qident:"a""b" ident:from qident:"T"`},
		{"unicode identifier", `select U&"d\0061t\+000061"`, `ident:select uident:U&"d\0061t\+000061"`},
		{"U& not followed by a quote is the identifier u", "select u&x", "ident:select ident:u op:& ident:x"},
		{"longer word before & is an identifier", "select mu&'x'", "ident:select ident:mu op:& str:'x'"},
		{"string with doubled quote", "select 'it''s'", "ident:select str:'it''s'"},
		{"empty string", "select ''", "ident:select str:''"},
		{"E string with escaped quote", `select E'it\'s', e'a\\b\n'`, `ident:select estr:E'it\'s' punct:, estr:e'a\\b\n'`},
		{"E string with doubled quote", `select E'a''b'`, `ident:select estr:E'a''b'`},
		{"N string", "select N'x', n'y'", "ident:select nstr:N'x' punct:, nstr:n'y'"},
		{"bit and hex strings", "select B'0101', x'1F', b''", "ident:select bstr:B'0101' punct:, xstr:x'1F' punct:, bstr:b''"},
		{"unicode string", "select U&'abc'", "ident:select ustr:U&'abc'"},
		{"prefix letter after a longer word is an identifier", "select ee'x'", "ident:select ident:ee str:'x'"},
		{"typed literal", "select date '2024-01-01'", "ident:select ident:date str:'2024-01-01'"},
		{"dollar quote", "select $$a'b$$", "ident:select dstr:$$a'b$$"},
		{"tagged dollar quote with other tags inside", "select $fn$ $$ $f$ $fnx$ $fn$", "ident:select dstr:$fn$ $$ $f$ $fnx$ $fn$"},
		{"dollar quote with multibyte tag", "select $ü$x$ü$", "ident:select dstr:$ü$x$ü$"},
		{"parameters", "select $1, $23 from t where a=$1", "ident:select param:$1 punct:, param:$23 ident:from ident:t ident:where ident:a op:= param:$1"},
		{"parameter field", "select $1.f", "ident:select param:$1 punct:. ident:f"},
		{"integers and int32 overflow", "select 0, 007, 2147483647, 2147483648, 99999999999",
			"ident:select int:0 punct:, int:007 punct:, int:2147483647 punct:, num:2147483648 punct:, num:99999999999"},
		{"leading zeros do not overflow", "select 00000000002147483647", "ident:select int:00000000002147483647"},
		{"numerics", "select 1.5, .5, 1., 1e10, 1.5E-3, .5e+2", "ident:select num:1.5 punct:, num:.5 punct:, num:1. punct:, num:1e10 punct:, num:1.5E-3 punct:, num:.5e+2"},
		{"dot after identifier then number", "select t.5", "ident:select ident:t num:.5"},
		{"qualified name", "select a.b.c", "ident:select ident:a punct:. ident:b punct:. ident:c"},
		{"nested comments", "select /* a /* b */ c */ 1 -- tail", "ident:select int:1"},
		{"comment with stars and slashes", "select /*/ **/ 1 /***/", "ident:select int:1"},
		{"dash-dash cuts an operator", "select 1 +-- c\n 2", "ident:select int:1 op:+ int:2"},
		{"slash-star cuts an operator", "select 1 +/* c */2", "ident:select int:1 op:+ int:2"},
		{"operator run kept whole", "select a <=> b, c @@ d, e =- 1, f !~~* g", "ident:select ident:a op:<=> ident:b punct:, ident:c op:@@ ident:d punct:, ident:e op:=- int:1 punct:, ident:f op:!~~* ident:g"},
		{"star-slash outside a comment is an operator", "select 2 */ 3", "ident:select int:2 op:*/ int:3"},
		{"casts and colon-equals", "select x::int, f(a := 1), a[1:2]", "ident:select ident:x punct::: ident:int punct:, ident:f punct:( ident:a punct::= int:1 punct:) punct:, ident:a punct:[ int:1 punct:: int:2 punct:]"},
		{"whitespace kinds", "select\t1\r\n,\f2", "ident:select int:1 punct:, int:2"},

		{"unterminated string", "select 'abc", "unsure"},
		{"unterminated E string after backslash", `select E'abc\`, "unsure"},
		{"unterminated quoted identifier", `select "abc`, "unsure"},
		{"empty quoted identifier", `select "" from t`, "unsure"},
		{"unterminated comment", "select 1 /* a /* b */", "unsure"},
		{"unterminated dollar quote", "select $a$ x $b$", "unsure"},
		{"backslash in a standard string", `select 'a\'`, "unsure"},
		{"backslash in N string", `select N'a\b'`, "unsure"},
		{"backslash in U& string", `select U&'\0041'`, "unsure"},
		{"backslash in bit string", `select B'0\1'`, "unsure"},
		{"octal escape", `select E'\101'`, "unsure"},
		{"hex escape", `select E'\x41'`, "unsure"},
		{"unicode escape", `select E'\u0041'`, "unsure"},
		{"long unicode escape", `select E'\U00000041'`, "unsure"},
		{"hex integer", "select 0x1F", "unsure"},
		{"octal integer", "select 0o17", "unsure"},
		{"binary integer", "select 0b101", "unsure"},
		{"underscore in number", "select 1_000", "unsure"},
		{"identifier after number", "select 123abc", "unsure"},
		{"exponent without digits", "select 1e", "unsure"},
		{"exponent sign without digits", "select 1e+", "unsure"},
		{"number then dot dot", "select 1..2", "unsure"},
		{"two decimal points", "select 1.2.3", "unsure"},
		{"parameter junk", "select $1a", "unsure"},
		{"parameter then dollar", "select $1$", "unsure"},
		{"long parameter", "select $1234567890", "unsure"},
		{"lone dollar", "select $ 1", "unsure"},
		{"failed dollar tag", "select $abc", "unsure"},
		{"psql variable", "select :foo", "unsure"},
		{"psql quoted variable", "select :'foo'", "unsure"},
		{"vertical tab", "select 1\v", "unsure"},
		{"backslash outside quotes", `select 1 \g`, "unsure"},
		{"brace", "select {1}", "unsure"},
		{"control character", "select \x01", "unsure"},
		{"operator too long", "select 1 " + strings.Repeat("!", 64) + " 1", "unsure"},
		{"operator just short enough", "select 1 " + strings.Repeat("!", 63) + " 1", "ident:select int:1 op:" + strings.Repeat("!", 63) + " int:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			toks, ok := lexAll(tc.text)
			got := "unsure"
			if ok {
				got = renderTokens(tc.text, toks)
			}
			if got != tc.want {
				t.Fatalf("%q\n got: %s\nwant: %s", tc.text, got, tc.want)
			}
			if ok {
				if err := agreesWithScanner(tc.text, toks); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// agreesWithScanner checks the lexer's tokens against pg_query's own scanner
// (PostgreSQL's scan.l): the same token boundaries, comments aside, and
// the same classes. One operator run may be several scanner tokens.
func agreesWithScanner(text string, toks []token) error {
	res, err := pg_query.Scan(text)
	if err != nil {
		return fmt.Errorf("%q: lexer sure, scanner failed: %v", text, err)
	}
	var st []*pg_query.ScanToken
	for _, t := range res.Tokens {
		if t.Token != pg_query.Token_SQL_COMMENT && t.Token != pg_query.Token_C_COMMENT {
			st = append(st, t)
		}
	}
	j := 0
	for _, tok := range toks {
		if j >= len(st) {
			return fmt.Errorf("%q: token %q past the scanner's last", text, text[tok.start:tok.end])
		}
		s := st[j]
		at := fmt.Sprintf("%q: token %s:%q vs scanner %v [%d,%d)", text, kindNames[tok.kind], text[tok.start:tok.end], s.Token, s.Start, s.End)
		if int(s.Start) != tok.start {
			return fmt.Errorf("%s: starts differ", at)
		}
		switch tok.kind {
		case tkOp:
			// Several scanner tokens, contiguous, none of them a comment.
			end := tok.start
			for j < len(st) && int(st[j].Start) == end && int(st[j].End) <= tok.end {
				end = int(st[j].End)
				j++
			}
			if end != tok.end {
				return fmt.Errorf("%s: operator run not covered", at)
			}
			continue
		case tkNationalString:
			// NCHAR, then the string.
			if s.Token != pg_query.Token_NCHAR || int(s.End) != tok.start+1 || j+1 >= len(st) ||
				st[j+1].Token != pg_query.Token_SCONST || int(st[j+1].End) != tok.end {
				return fmt.Errorf("%s: want NCHAR SCONST", at)
			}
			j += 2
			continue
		}
		if int(s.End) != tok.end {
			return fmt.Errorf("%s: ends differ", at)
		}
		var want []pg_query.Token
		switch tok.kind {
		case tkIdent:
			if s.KeywordKind == pg_query.KeywordKind_NO_KEYWORD {
				want = []pg_query.Token{pg_query.Token_IDENT}
			} else {
				want = []pg_query.Token{s.Token}
			}
		case tkQuotedIdent:
			want = []pg_query.Token{pg_query.Token_IDENT}
		case tkUnicodeIdent:
			want = []pg_query.Token{pg_query.Token_UIDENT}
		case tkPunct:
			want = []pg_query.Token{pg_query.Token(text[tok.start])}
			switch text[tok.start:tok.end] {
			case "::":
				want = []pg_query.Token{pg_query.Token_TYPECAST}
			case ":=":
				want = []pg_query.Token{pg_query.Token_COLON_EQUALS}
			}
		case tkParam:
			want = []pg_query.Token{pg_query.Token_PARAM}
		case tkInteger:
			want = []pg_query.Token{pg_query.Token_ICONST}
		case tkNumeric:
			want = []pg_query.Token{pg_query.Token_FCONST}
		case tkString, tkEscapeString, tkDollarString:
			want = []pg_query.Token{pg_query.Token_SCONST}
		case tkBitString:
			want = []pg_query.Token{pg_query.Token_BCONST}
		case tkHexString:
			want = []pg_query.Token{pg_query.Token_XCONST}
		case tkUnicodeString:
			want = []pg_query.Token{pg_query.Token_USCONST}
		}
		if len(want) != 1 || want[0] != s.Token {
			return fmt.Errorf("%s: want %v", at, want)
		}
		j++
	}
	if j != len(st) {
		return fmt.Errorf("%q: scanner has %d more tokens", text, len(st)-j)
	}
	return nil
}
