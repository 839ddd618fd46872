// Package firewall classifies SQL text on the real PostgreSQL parser
// (pg_query_go) and refuses what could cross tenants or escape the tenant
// binding. It knows nothing of sockets or sessions: text in, Verdict out.
//
// # Verdicts by statement shape
//
// Parsing costs about 17 µs of CPU, and simple-protocol clients (pgbench -S,
// any driver that interpolates) never repeat a text. So Check first lexes
// the text in Go (lexer.go, after PostgreSQL's scan.l) into its shape: the
// token stream with whitespace and comments dropped, unquoted identifiers
// and keywords folded to ASCII lower case (as PostgreSQL folds them),
// quoted identifiers and operators kept byte for byte, and constants
// masked to their token class. The shape keys the verdict cache: the
// parser runs once per shape, and `… WHERE aid = 1` and `… WHERE aid = 2`
// cost one parse between them.
//
// Masked: integer literals that fit int32 (ICONST), other numeric literals
// (FCONST: a decimal point, an exponent, or beyond int32 — the grammar
// accepts the two in different places, so they are different classes),
// parameters $n, and string literals of each kind ('…', E'…', N'…', B'…',
// X'…', U&'…', $tag$…$tag$, each its own class). Never masked:
// identifiers, keywords, operators and punctuation, which are everything
// the rules read.
//
// Why masking is safe: a verdict depends on the parse tree's shape and
// names, not on a constant's value. The rules (rules.go) read statement
// kinds, keywords (DISCARD ALL, WITH HOLD, TEMP, ROW LEVEL SECURITY),
// option and setting names (EXPLAIN's analyze, SET's name), function names
// and relation names, all of which come from identifiers and keywords.
// set_config is refused whatever its arguments, current_setting and
// pg_advisory_lock are judged by name, EXPLAIN is refused for an ANALYZE
// option whatever its value, LOCK modes and SHOW names are keywords and
// identifiers. Two texts with one shape therefore parse to trees that
// differ only in constant values and locations, and get one verdict. The
// exceptions, where the parser or a rule does read a constant, are kept
// in the shape byte for byte ("pinned"), never masked:
//
//   - COPY anywhere in the text pins every constant: the file name is a
//     constant, and the parse tree cannot tell an empty file name from STDOUT.
//   - A reg* type or to_reg* function anywhere (regclass, regproc, …,
//     quoted or not) pins every constant: such a cast turns a string into
//     an object name ('tenantguard.binding_key'::regclass). No rule reads
//     those names today; the pin keeps the cache right when one does.
//   - A statement that starts with SET, RESET, SHOW or EXPLAIN pins its
//     own constants (setting values, EXPLAIN option values).
//   - float(n) pins n (the grammar picks float4 or float8 by it, or
//     errs), and ALTER [COLUMN] n pins n (range-checked by the grammar).
//   - Integer literals beyond int32 lex as FCONST (a different class),
//     which the lexer reproduces.
//
// Whatever the lexer cannot lex exactly as both the upstream server
// (PostgreSQL 15) and pg_query (17) would goes to the parser, never to a
// guess: unterminated quotes, identifiers or comments; a backslash in any
// literal but E'…' (its meaning depends on standard_conforming_strings,
// and in U&'…' it starts an escape the parser validates); octal, hex and
// Unicode escapes in E'…' (they can produce invalid text); UESCAPE; two
// string literals in a row (one literal continued across a newline, or an
// error); numbers that run into an identifier character or a second dot
// (0x1F, 0o17, 0b101, 1_000, 123abc and 1e mean different things in 15 and
// 16+); $1a, $1$, long parameter numbers and lone $; psql variables
// (:name); \v (whitespace only from 16 on); operators of 64 bytes or more
// (too long, perhaps, after trimming); any byte scan.l returns as
// {other} (\, {, }, control characters); and a comment right after NOT,
// WITH, WITHOUT, NULLS or FORMAT (the grammar filter looks one token
// ahead after those, and pg_query's scanner, unlike the server's, shows it
// the comment: WITH /* */ TIME ZONE is an error to pg_query only). Those texts keep the old path:
// the exact text, then pg_query's normalized text, as cache keys. Invalid
// UTF-8 and NUL are refused before either path.
//
// Syntax errors are not cached by shape: the parser's message quotes the
// offending token, perhaps a constant, which must not reach another text
// (another tenant's) of the same shape. They are cached by exact text. So
// is a verdict from a rule that does read a constant (SET client_encoding
// and standard_conforming_strings accept only the values the firewall
// parses with): such a verdict is never cached by shape or normalized
// text, on either path. Whether a rule reads a constant depends only on
// names, so no text of the same shape can find a shared verdict instead.
//
// Collisions: the shape is a byte string, an unambiguous encoding of the
// token stream (a kind byte per token, then, for identifiers, operators
// and pinned constants, their bytes and a NUL, which SQL text cannot
// contain), prefixed with "\x00\x01" so it can equal neither a query text
// nor a normalized-text key. A small direct-mapped memo (memo.go) answers
// most lookups: it compares the whole shape, so it has no collisions at
// all. Behind it, the ristretto cache hashes keys into 128 bits, as it
// always has for text keys: memhash, seeded randomly per process (a
// tenant cannot compute collisions offline), and xxhash. A collision there
// would need both, for a shape the attacker chose, among 10,000 entries;
// it is no easier than with the text keys the firewall used before.
// Verdict.Fingerprint is separate: a stable FNV-1a for statistics, never a
// cache key.
package firewall
