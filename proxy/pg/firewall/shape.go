package firewall

import (
	"encoding/binary"
	"strings"
)

// The shape of a statement is its token stream with constants masked: the
// key under which a verdict is cached without parsing the text. See the
// package documentation for what is masked and why that is safe.

// shapePrefix starts every shape. Raw query texts never contain NUL, and
// normalized-text keys are "\x00" followed by parsed SQL (never \x01), so
// the three kinds of cache key cannot meet. The second byte versions the
// encoding.
const shapePrefix = "\x00\x01"

// pinned marks a constant whose bytes the shape keeps: pinnedBit|kind,
// then its bytes. The bit keeps pinned and masked encodings apart.
const pinnedBit = 0x80

// word is a keyword or identifier that the shape builder acts on.
type word uint8

const (
	wordOther     word = iota
	wordPinAll         // copy, reg* types, to_reg*: keep every constant of the text
	wordSet            // set: at a statement's head, as wordHead
	wordHead           // reset, show, explain: keep the statement's constants
	wordFloat          // float(n): n chooses float4/float8 or is an error
	wordColumn         // alter [column] n set statistics: n is range-checked
	wordUescape        // UESCAPE changes how the preceding U& literal reads
	wordLookahead      // format, not, nulls, with, without
)

// classifyWord looks an identifier up, ASCII case-insensitively as
// PostgreSQL's keyword lookup and downcase_identifier do.
//
// Pin-all words make every constant of the text part of its shape: COPY
// (its file name is a constant, and an empty name reads as STDOUT to the
// firewall), and the reg* types and to_reg* functions, which turn a string
// constant into an object name ('tenantguard.binding_key'::regclass,
// 'pg_terminate_backend'::regproc). No rule reads such a name today; the
// pin keeps the cache correct when one does.
//
// Lookahead words are the keywords after which the grammar's filter
// (parser.c, base_yylex) looks at the next token to pick NOT_LA, WITH_LA,
// NULLS_LA, WITHOUT_LA or FORMAT_LA. pg_query's scanner returns comments
// as tokens there, so a comment right after one of these changes how
// pg_query parses the text (WITH /* */ TIME ZONE is a syntax error to it,
// not to the server): such texts go to the parser.
func classifyWord(w string) word {
	n := len(w)
	if n < 3 || n > 15 {
		return wordOther
	}
	var buf [15]byte
	for i := 0; i < n; i++ {
		buf[i] = lower[w[i]]
	}
	return classifyLower(buf[:n])
}

// classifyLower is classifyWord for a word already in lower case.
func classifyLower(w []byte) word {
	if len(w) < 3 || len(w) > 15 {
		return wordOther
	}
	e := &wordTable[wordHash(w)]
	if e.kind != wordOther && string(w) == e.word {
		return e.kind
	}
	return wordOther
}

// wordHash is collision-free on the words of wordTable (checked when the
// table is built), so one comparison classifies a word.
func wordHash(w []byte) uint8 {
	n := len(w)
	return uint8(n + 2*int(w[n-1]) + 9*int(w[n-2]) + int(w[0]))
}

var wordTable = func() (t [256]struct {
	word string
	kind word
}) {
	for kind, words := range map[word][]string{
		wordSet:       {"set"},
		wordHead:      {"reset", "show", "explain"},
		wordFloat:     {"float"},
		wordColumn:    {"alter", "column"},
		wordUescape:   {"uescape"},
		wordLookahead: {"format", "not", "nulls", "with", "without"},
		wordPinAll: {"copy",
			"regclass", "regcollation", "regconfig", "regdictionary", "regnamespace", "regoper",
			"regoperator", "regproc", "regprocedure", "regrole", "regtype",
			"to_regclass", "to_regcollation", "to_regnamespace", "to_regoper", "to_regoperator",
			"to_regproc", "to_regprocedure", "to_regrole", "to_regtype", "to_regtypemod"},
	} {
		for _, w := range words {
			e := &t[wordHash([]byte(w))]
			if e.kind != wordOther {
				panic("firewall: wordHash collides on " + w + " and " + e.word)
			}
			e.word, e.kind = w, kind
		}
	}
	return t
}()

// lower folds ASCII letters to lower case and leaves every other byte.
var lower = func() (t [256]byte) {
	for c := range t {
		t[c] = byte(c)
		if 'A' <= c && c <= 'Z' {
			t[c] = byte(c + 'a' - 'A')
		}
	}
	return t
}()

// foldASCII lowers the ASCII letters of b in place, eight bytes at a time:
// in each byte of x&0x7f7f…, adding 0x3f sets bit 7 from 'A' on and adding
// 0x25 from past 'Z' on, with no carry between bytes; bytes with bit 7
// already set (UTF-8) are left alone.
func foldASCII(b []byte) {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		h := x &^ high
		upper := (h + 0x3f*ones) &^ (h + 0x25*ones) &^ x & high
		binary.LittleEndian.PutUint64(b, x|upper>>2)
		b = b[8:]
	}
	for i, c := range b {
		b[i] = lower[c]
	}
}

type shapeStatus uint8

const (
	shapeOK shapeStatus = iota
	shapeUnsure
	shapeRestartPinned // a pin-all word appeared after constants were masked
)

// appendShape appends the shape of text to dst. ok is false when the lexer
// is unsure of anything in text; then only the real parser may judge it.
// text must be valid UTF-8 without NUL bytes.
func appendShape(dst []byte, text string) (shape []byte, ok bool) {
	out, st := buildShape(dst, text, false, nil)
	if st == shapeRestartPinned {
		out, st = buildShape(dst, text, true, nil)
	}
	return out, st == shapeOK
}

// buildShape writes the shape of text after dst. With pinAll every
// constant keeps its bytes. pinned, when not nil, is called for each
// constant token whose bytes are kept (the fuzz test leaves those alone).
func buildShape(dst []byte, text string, pinAll bool, pinned func(token)) ([]byte, shapeStatus) {
	dst = append(dst, shapePrefix...)
	l := lexer{s: text}
	var (
		head      = true  // the next token starts a statement
		pinStmt   = false // the statement's constants are kept
		prevWord  word    // the previous token, if an identifier
		floatOpen bool    // the previous two tokens are float (
		prevStr   bool    // the previous token is a string literal
	)
	for {
		tok, st := l.next()
		switch st {
		case lexEOF:
			return dst, shapeOK
		case lexUnsure:
			return dst, shapeUnsure
		}
		if l.comment && prevWord == wordLookahead {
			return dst, shapeUnsure
		}
		b := text[tok.start:tok.end]
		w := wordOther
		nextFloatOpen, nextHead := false, false
		switch tok.kind {
		case tkIdent:
			// Unquoted identifiers and keywords fold to lower case
			// (ASCII only: downcase_identifier leaves multibyte text
			// alone), so SELECT and select share a shape.
			dst = append(dst, byte(tok.kind))
			n := len(dst)
			if len(b) <= 16 {
				// Most words: copy and fold in one pass, no memmove.
				for k := 0; k < len(b); k++ {
					dst = append(dst, lower[b[k]])
				}
			} else {
				dst = append(dst, b...)
				foldASCII(dst[n:])
			}
			folded := dst[n:]
			dst = append(dst, 0)
			w = classifyLower(folded)
			switch {
			case w == wordUescape:
				return dst, shapeUnsure
			case w == wordPinAll && !pinAll:
				return dst, shapeRestartPinned
			case head && (w == wordHead || w == wordSet):
				pinStmt = true
			}
		case tkQuotedIdent, tkUnicodeIdent:
			// Case-sensitive: kept as written. "regclass" is the type too,
			// and so may be U&"\0072egclass": escapes pin everything.
			if !pinAll {
				inner := b[1 : len(b)-1]
				if tok.kind == tkUnicodeIdent {
					inner = b[3 : len(b)-1]
				}
				if classifyWord(inner) == wordPinAll ||
					tok.kind == tkUnicodeIdent && strings.IndexByte(inner, '\\') >= 0 {
					return dst, shapeRestartPinned
				}
			}
			dst = append(dst, byte(tok.kind))
			dst = append(dst, b...)
			dst = append(dst, 0)
		case tkOp, tkPunct:
			if len(b) == 1 {
				dst = append(dst, byte(tok.kind), b[0], 0)
				if tok.kind == tkPunct {
					switch b[0] {
					case '(':
						nextFloatOpen = prevWord == wordFloat
					case ';':
						nextHead = true
						pinStmt = false
					}
				}
			} else {
				dst = append(dst, byte(tok.kind))
				dst = append(dst, b...)
				dst = append(dst, 0)
			}
		default: // constants
			if tok.kind.stringLit() && prevStr {
				// Two literals in a row: either one literal continued
				// across a newline ('a'\n'b', whose second part is read
				// in the first one's mode) or a syntax error. Not worth
				// modelling.
				return dst, shapeUnsure
			}
			keep := pinAll || pinStmt ||
				tok.kind == tkInteger && (floatOpen || prevWord == wordColumn)
			if keep {
				if pinned != nil {
					pinned(tok)
				}
				dst = append(dst, pinnedBit|byte(tok.kind))
				dst = append(dst, b...)
				dst = append(dst, 0)
			} else {
				dst = append(dst, byte(tok.kind))
			}
		}
		floatOpen, head = nextFloatOpen, nextHead
		prevWord = w
		prevStr = tok.kind.stringLit()
	}
}

// shapeFingerprint is the statement fingerprint reported in Verdict: FNV-1a
// over the shape with every constant, masked or kept, as one marker. It
// is stable across processes (sidecars' counts can be merged) and, like
// pg_query's own fingerprint, does not tell $1 from 1.
func shapeFingerprint(shape []byte) uint64 {
	h := uint64(14695981039346656037)
	add := func(c byte) {
		h ^= uint64(c)
		h *= 1099511628211
	}
	for i := 0; i < len(shapePrefix) && i < len(shape); i++ {
		add(shape[i])
	}
	for i := len(shapePrefix); i < len(shape); {
		c := shape[i]
		i++
		base := tokKind(c &^ pinnedBit)
		payload := c&pinnedBit != 0 || !base.constant()
		if base.constant() {
			add('C')
		} else {
			add(c)
		}
		if !payload {
			continue
		}
		for i < len(shape) && shape[i] != 0 {
			if !base.constant() {
				add(shape[i])
			}
			i++
		}
		i++ // the terminator
		if !base.constant() {
			add(0)
		}
	}
	if h == 0 {
		h = 1
	}
	return h
}
