package firewall

// lexer splits SQL text into the tokens of PostgreSQL's scanner
// (src/backend/parser/scan.l), as far as the statement shape needs them.
// It never guesses: whatever it cannot lex exactly as the server and
// pg_query would (in every version from PostgreSQL 15, the upstream, to
// pg_query's 17) it reports as unsure, and the caller falls back to the
// real parser. Identifiers, keywords and operators are returned with their
// exact bytes; the caller decides what a constant's bytes mean.

// tokKind is a token class. The order matters: constant() and stringLit()
// compare against it.
type tokKind uint8

const (
	tkIdent          tokKind = iota + 1 // unquoted identifier or keyword (case-insensitive)
	tkQuotedIdent                       // "…", case-sensitive
	tkUnicodeIdent                      // U&"…"
	tkOp                                // a run of operator characters, cut before -- or /*
	tkPunct                             // , ( ) [ ] ; . : :: :=
	tkParam                             // $n
	tkInteger                           // ICONST: decimal digits whose value fits int32
	tkNumeric                           // FCONST: decimal point, exponent, or beyond int32
	tkString                            // '…'
	tkEscapeString                      // E'…'
	tkNationalString                    // N'…'
	tkBitString                         // B'…'
	tkHexString                         // X'…'
	tkUnicodeString                     // U&'…'
	tkDollarString                      // $tag$…$tag$
)

// constant reports whether the token is a literal or a parameter: what the
// shape may mask.
func (k tokKind) constant() bool { return k >= tkParam }

// stringLit reports whether the token is a quoted string literal.
func (k tokKind) stringLit() bool { return k >= tkString }

type token struct {
	kind       tokKind
	start, end int // byte offsets into the text
}

type lexStatus uint8

const (
	lexToken lexStatus = iota
	lexEOF
	lexUnsure
)

// Byte classes, after scan.l's character sets.
const (
	clOther      uint8 = iota // {other}, \v (whitespace only from PostgreSQL 16), \, {, }, controls
	clSpace                   // [ \t\n\r\f]
	clIdentStart              // [A-Za-z\200-\377_]
	clDigit                   // [0-9]
	clOp                      // op_chars: ~!@#^&|`?+-*/%<>=
	clPunct                   // , ( ) [ ] ;
	clColon                   // :
	clDot                     // .
	clQuote                   // '
	clDQuote                  // "
	clDollar                  // $
)

var byteClass = func() (t [256]uint8) {
	for _, c := range []byte(" \t\n\r\f") {
		t[c] = clSpace
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = clIdentStart
		t[c-'a'+'A'] = clIdentStart
	}
	t['_'] = clIdentStart
	for c := 0x80; c <= 0xff; c++ {
		t[c] = clIdentStart
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = clDigit
	}
	for _, c := range []byte("~!@#^&|`?+-*/%<>=") {
		t[c] = clOp
	}
	for _, c := range []byte(",()[];") {
		t[c] = clPunct
	}
	t[':'] = clColon
	t['.'] = clDot
	t['\''] = clQuote
	t['"'] = clDQuote
	t['$'] = clDollar
	return t
}()

// mayStartSpace: whitespace, or the first byte of -- or /*.
var mayStartSpace = func() (t [256]bool) {
	for c := range t {
		t[c] = byteClass[c] == clSpace || c == '-' || c == '/'
	}
	return t
}()

// identCont is scan.l's ident_cont: [A-Za-z\200-\377_0-9\$].
func identCont(c byte) bool { return identContTab[c] }

var identContTab = func() (t [256]bool) {
	for c := range t {
		k := byteClass[c]
		t[c] = k == clIdentStart || k == clDigit || c == '$'
	}
	return t
}()

// dolqCont is scan.l's dolq_cont: an identifier character but not $.
func dolqCont(c byte) bool {
	k := byteClass[c]
	return k == clIdentStart || k == clDigit
}

type lexer struct {
	s   string
	pos int
	// comment: a comment came between the previous token and this one.
	comment bool
}

// next returns the next token, skipping whitespace and comments.
func (l *lexer) next() (token, lexStatus) {
	l.comment = false
	s, i := l.s, l.pos
	if i < len(s) && s[i] == ' ' {
		i++ // one blank, the common case, without the call
		l.pos = i
	}
	if i < len(s) && mayStartSpace[s[i]] {
		if !l.skipSpace() {
			return token{}, lexUnsure
		}
		i = l.pos
	}
	if i >= len(s) {
		return token{}, lexEOF
	}
	c := s[i]
	var (
		kind tokKind
		end  int
	)
	switch byteClass[c] {
	case clIdentStart:
		kind, end = l.word(i)
	case clDigit:
		kind, end = l.number(i)
	case clDot:
		switch {
		case i+1 < len(s) && byteClass[s[i+1]] == clDigit:
			kind, end = l.number(i) // .5
		case i+1 < len(s) && s[i+1] == '.':
			return token{}, lexUnsure // DOT_DOT is no core SQL; 1..2 lexes oddly
		default:
			kind, end = tkPunct, i+1
		}
	case clQuote:
		kind, end = tkString, l.quoted(i+1, quoteStandard)
	case clDQuote:
		kind, end = tkQuotedIdent, l.quotedIdent(i+1)
	case clDollar:
		kind, end = l.dollar(i)
	case clOp:
		kind, end = tkOp, l.operator(i)
	case clPunct:
		kind, end = tkPunct, i+1
	case clColon:
		kind, end = tkPunct, i+1
		if i+1 < len(s) {
			switch n := s[i+1]; {
			case n == ':' || n == '=': // TYPECAST, COLON_EQUALS
				end = i + 2
			case byteClass[n] == clIdentStart || n == '\'' || n == '"':
				return token{}, lexUnsure // psql's :name, :'name', :"name"
			}
		}
	default:
		return token{}, lexUnsure
	}
	if end < 0 {
		return token{}, lexUnsure
	}
	l.pos = end
	return token{kind: kind, start: i, end: end}, lexToken
}

// skipSpace skips whitespace, -- comments and nested /* */ comments. It
// fails on an unterminated /* comment.
func (l *lexer) skipSpace() bool {
	s, i := l.s, l.pos
	for i < len(s) {
		c := s[i]
		switch {
		case byteClass[c] == clSpace:
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			// {comment}: to the next \n or \r, or the end of the text.
			l.comment = true
			i += 2
			for i < len(s) && s[i] != '\n' && s[i] != '\r' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			// <xc>: /* nests, */ closes the innermost.
			l.comment = true
			i += 2
			depth := 0
			for {
				if i+1 >= len(s) {
					return false
				}
				if s[i] == '/' && s[i+1] == '*' {
					depth++
					i += 2
				} else if s[i] == '*' && s[i+1] == '/' {
					i += 2
					if depth == 0 {
						break
					}
					depth--
				} else {
					i++
				}
			}
		default:
			l.pos = i
			return true
		}
	}
	l.pos = i
	return true
}

// word lexes an identifier or keyword at i, or one of the string forms
// that start with a letter: E'…', B'…', X'…', N'…', U&'…', U&"…". Flex
// takes the longest match, so those apply only when the letter stands
// alone before the quote: ex'1' is the identifier ex and a string.
func (l *lexer) word(i int) (tokKind, int) {
	s := l.s
	j := i + 1
	for j < len(s) && identCont(s[j]) {
		j++
	}
	if j != i+1 || j >= len(s) {
		return tkIdent, j
	}
	switch s[i] {
	case 'e', 'E':
		if s[j] == '\'' {
			return tkEscapeString, l.quoted(j+1, quoteEscape)
		}
	case 'b', 'B':
		if s[j] == '\'' {
			return tkBitString, l.quoted(j+1, quoteBits)
		}
	case 'x', 'X':
		if s[j] == '\'' {
			return tkHexString, l.quoted(j+1, quoteBits)
		}
	case 'n', 'N':
		// {xnstart}: the keyword NCHAR, then an ordinary string.
		if s[j] == '\'' {
			return tkNationalString, l.quoted(j+1, quoteStandard)
		}
	case 'u', 'U':
		if s[j] == '&' && j+1 < len(s) {
			switch s[j+1] {
			case '\'':
				return tkUnicodeString, l.quoted(j+2, quoteStandard)
			case '"':
				return tkUnicodeIdent, l.quotedIdent(j + 2)
			}
		}
		// {xufailed}: U& followed by anything else is the identifier u.
	}
	return tkIdent, j
}

type quoteStyle uint8

const (
	quoteStandard quoteStyle = iota // <xq>, <xus>: '' is a quote
	quoteEscape                     // <xe>: '' and backslash escapes
	quoteBits                       // <xb>, <xh>: ends at the first '
)

// quoted scans a quoted literal whose body starts at i and returns the
// offset after its closing quote, or -1 when unsure: unterminated, or a
// backslash outside E'…' (its meaning would depend on
// standard_conforming_strings, and in U&'…' it starts an escape whose value
// the parser checks), or an E'…' escape whose value the lexer checks
// (octal, hex and Unicode escapes can make invalid text or invalid code
// points).
func (l *lexer) quoted(i int, style quoteStyle) int {
	s := l.s
	for i < len(s) {
		switch s[i] {
		case '\'':
			if style != quoteBits && i+1 < len(s) && s[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1
		case '\\':
			if style != quoteEscape || i+1 >= len(s) {
				return -1
			}
			switch s[i+1] {
			case '0', '1', '2', '3', '4', '5', '6', '7', 'x', 'u', 'U':
				return -1
			}
			i += 2 // {xeescape}: the backslash and any one byte, ' included
			continue
		}
		i++
	}
	return -1
}

// quotedIdent scans a delimited identifier whose body starts at i ("" is a
// quote) and returns the offset after its closing quote, or -1 when
// unterminated or empty (an error the parser reports).
func (l *lexer) quotedIdent(i int) int {
	s := l.s
	start := i
	for i < len(s) {
		if s[i] == '"' {
			if i+1 < len(s) && s[i+1] == '"' {
				i += 2
				continue
			}
			if i == start {
				return -1
			}
			return i + 1
		}
		i++
	}
	return -1
}

// number lexes a decimal numeric literal at i. Only the forms every
// version from 15 on lexes alike are sure: digits, digits.digits, .digits,
// with an optional exponent. 0x1F, 0o17, 0b101 and 1_000 are integers
// from PostgreSQL 16 on but an integer and an identifier before it, and
// 123abc or 1e is an error from 16 on but a literal and an alias before:
// anything that runs into an identifier character or another dot is
// unsure.
func (l *lexer) number(i int) (tokKind, int) {
	s := l.s
	j := i
	for j < len(s) && byteClass[s[j]] == clDigit {
		j++
	}
	integer := true
	if j < len(s) && s[j] == '.' {
		if j+1 < len(s) && s[j+1] == '.' {
			return 0, -1 // {numericfail}: 1..2
		}
		integer = false
		j++
		for j < len(s) && byteClass[s[j]] == clDigit {
			j++
		}
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		k := j + 1
		if k < len(s) && (s[k] == '+' || s[k] == '-') {
			k++
		}
		if k >= len(s) || byteClass[s[k]] != clDigit {
			return 0, -1 // {realfail} or trailing junk
		}
		for k < len(s) && byteClass[s[k]] == clDigit {
			k++
		}
		integer = false
		j = k
	}
	if j < len(s) && (identCont(s[j]) || s[j] == '.') {
		return 0, -1
	}
	if integer && !fitsInt32(s[i:j]) {
		// process_integer_literal: an integer beyond int32 is an FCONST,
		// and the grammar accepts the two in different places.
		return tkNumeric, j
	}
	if integer {
		return tkInteger, j
	}
	return tkNumeric, j
}

// fitsInt32 reports whether a run of decimal digits is at most 2147483647.
func fitsInt32(d string) bool {
	for len(d) > 1 && d[0] == '0' {
		d = d[1:]
	}
	const max = "2147483647"
	if len(d) != len(max) {
		return len(d) < len(max)
	}
	return d <= max
}

// dollar lexes $n (a parameter) or a dollar-quoted string at i.
func (l *lexer) dollar(i int) (tokKind, int) {
	s := l.s
	j := i + 1
	if j < len(s) && byteClass[s[j]] == clDigit {
		for j < len(s) && byteClass[s[j]] == clDigit {
			j++
		}
		// $1a is an error from 16 on ({param_junk}) but $1 and a before;
		// a long number may overflow.
		if j-i-1 > 9 || j < len(s) && identCont(s[j]) {
			return 0, -1
		}
		return tkParam, j
	}
	// {dolqdelim}: $ [A-Za-z\200-\377_][A-Za-z\200-\377_0-9]* $, or $$.
	if j < len(s) && byteClass[s[j]] == clIdentStart {
		j++
		for j < len(s) && dolqCont(s[j]) {
			j++
		}
	}
	if j >= len(s) || s[j] != '$' {
		return 0, -1 // {dolqfailed} or a lone $: an error
	}
	delim := s[i : j+1]
	// The body ends at the first occurrence of the same delimiter: every $
	// in it starts a fresh match attempt (<xdolq> puts back the last $ of
	// a delimiter that differs), so a plain search agrees with flex.
	body := j + 1
	for k := body; k+len(delim) <= len(s); k++ {
		if s[k] == '$' && s[k:k+len(delim)] == delim {
			return tkDollarString, k + len(delim)
		}
	}
	return 0, -1
}

// operator lexes a run of operator characters at i, cut before an embedded
// -- or /* (they start comments). How the server splits the run further
// (trailing + and -, <=, =>, …) depends only on its bytes, which the shape
// keeps.
func (l *lexer) operator(i int) int {
	s := l.s
	j := i + 1
	for j < len(s) && byteClass[s[j]] == clOp {
		if (s[j] == '-' && j+1 < len(s) && s[j+1] == '-') || (s[j] == '/' && j+1 < len(s) && s[j+1] == '*') {
			break
		}
		j++
	}
	if j-i >= maxIdentifierBytes {
		return -1 // "operator too long" (NAMEDATALEN), perhaps, after trimming
	}
	return j
}

// maxIdentifierBytes is NAMEDATALEN: operators this long are an error.
const maxIdentifierBytes = 64
