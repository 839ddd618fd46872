package firewall

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dgraph-io/ristretto/v2"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Class is what a statement needs from the tenant's policy.
type Class uint8

// Statement classes; a statement may need several.
const (
	Read Class = 1 << iota
	Write
	DDL
)

func (c Class) String() string {
	var parts []string
	if c&Read != 0 {
		parts = append(parts, "read")
	}
	if c&Write != 0 {
		parts = append(parts, "write")
	}
	if c&DDL != 0 {
		parts = append(parts, "ddl")
	}
	return strings.Join(parts, "+")
}

// Verdict is the classification of one query string (all its statements).
type Verdict struct {
	// Rule names the rule that refuses the query; "" means not refused.
	Rule string
	// Reason says, for a person, what was refused.
	Reason string
	// Class is what the statements need from the policy.
	Class Class
	// SessionState: the query leaves session-level state (a SET, LISTEN,
	// advisory lock, cursor WITH HOLD, …) that must be reset before the
	// connection serves anyone else.
	SessionState bool
	// SQLPrepare: a SQL-level PREPARE; HoldCursor: DECLARE … WITH HOLD.
	// Both outlive the transaction, so transaction pooling refuses them.
	SQLPrepare bool
	HoldCursor bool
	// SetsStatementTimeout: the query changes statement_timeout, which a
	// per-tenant limit may forbid.
	SetsStatementTimeout bool
	// Syntax is set when the text does not parse; Reason holds the error.
	Syntax bool
	// CopyFrom: the query is COPY … FROM STDIN into a table, which the
	// proxy loads through the isolation when the table is row-isolated
	// (see CopyTarget).
	CopyFrom bool
	// Listen: the query has LISTEN or UNLISTEN, which the proxy answers
	// itself (see Channels). Notify: it has NOTIFY or calls pg_notify,
	// whose channels the proxy namespaces (see NamespaceNotify).
	Listen, Notify bool
	// Fingerprint identifies the statement's shape, stable across
	// processes: a 64-bit FNV-1a hash of its token stream with every
	// constant and parameter as one marker (see shapeFingerprint) or, for
	// text the lexer leaves to the parser, of its normalized text
	// (constants replaced by $n) or of the text itself when it does not
	// normalize. 0 for text refused before parsing.
	Fingerprint uint64

	// Cache is what the result cache needs of the query; nil when the
	// query is refused or does not parse.
	Cache *CacheInfo

	// exact: a rule read a constant's value, so the verdict is cached by
	// the exact text, never by shape or normalized text. Whether a rule
	// reads one depends only on names and keywords (SET client_encoding),
	// so no text of the same shape finds a shared verdict instead.
	exact bool
}

// Refused reports whether the verdict refuses the query.
func (v *Verdict) Refused() bool { return v.Rule != "" }

// Config names what the firewall protects.
type Config struct {
	// BindingSetting is the custom setting that carries the tenant binding,
	// e.g. "tenantguard.binding".
	BindingSetting string
	// ProtectedSchema holds the binding function and key; tenants may call
	// its current_tenant() and touch nothing else in it.
	ProtectedSchema string
	// CacheEntries bounds the verdict cache.
	CacheEntries int64
}

// Firewall classifies queries and caches verdicts.
type Firewall struct {
	cfg   Config
	cache *ristretto.Cache[string, *Verdict]
	memo  *shapeMemo // in front of cache, for shape keys
}

// New builds a Firewall.
func New(cfg Config) (*Firewall, error) {
	if cfg.CacheEntries <= 0 {
		cfg.CacheEntries = 10000
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, *Verdict]{
		NumCounters: cfg.CacheEntries * 10,
		MaxCost:     cfg.CacheEntries,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("verdict cache: %w", err)
	}
	return &Firewall{cfg: cfg, cache: c, memo: newShapeMemo()}, nil
}

// Close releases the cache's goroutines.
func (f *Firewall) Close() { f.cache.Close() }

var invalidUTF8 = &Verdict{Rule: "encoding", Reason: "query text is not valid UTF-8"}

// Check classifies query. The returned Verdict is shared: do not modify it.
func (f *Firewall) Check(query string) *Verdict {
	// Invalid UTF-8 is refused before parsing: the multibyte-escape class of
	// filter evasions relies on parser and server disagreeing about bytes.
	// It is refused before the shape too, which masks string contents.
	if !validText(query) {
		return invalidUTF8
	}
	// Shapes of ordinary statements fit on the stack; the memo reads the
	// buffer in place, and only what outlives the call is copied.
	var buf [256]byte
	if shape, ok := appendShape(buf[:0], query); ok {
		return f.checkShape(query, shape)
	}
	return f.checkNormalized(query)
}

// validText reports whether s is valid UTF-8 without NUL bytes.
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// checkShape answers from the verdict cached for the statement's shape, or
// parses the text once for it. Verdicts are cached by shape only when the
// text parses: a syntax error's message may quote a constant, which must
// not reach another text of the same shape (perhaps another tenant's), so
// syntax errors are cached by their exact text.
func (f *Firewall) checkShape(query string, shape []byte) *Verdict {
	v, h := f.memo.get(shape)
	if v != nil {
		return v
	}
	key := string(shape)
	if v, ok := f.cache.Get(key); ok {
		f.memo.put(h, key, v)
		return v
	}
	if v, ok := f.cache.Get(query); ok {
		return v
	}
	v = f.checkUncached(query)
	v.Fingerprint = shapeFingerprint(shape)
	if v.Syntax || v.exact {
		f.cache.Set(query, v, 1)
	} else {
		f.cache.Set(key, v, 1)
		f.memo.put(h, key, v)
	}
	return v
}

// checkNormalized is the path for text the lexer is unsure of: verdicts
// cached by exact text and by pg_query's normalized text. Normalizing
// parses, so a new text costs a parse even when its normalized form is
// cached. query is valid UTF-8 without NUL.
func (f *Firewall) checkNormalized(query string) *Verdict {
	if v, ok := f.cache.Get(query); ok {
		return v
	}
	key, norm := query, query
	if n, err := pg_query.Normalize(query); err == nil {
		norm = n
	}
	if norm != query {
		// Queries that differ only in constants share one entry; the raw
		// text is not cached too, so a stream of distinct constants (every
		// simple-protocol query) does not churn the cache.
		key = "\x00" + norm
		if v, ok := f.cache.Get(key); ok {
			return v
		}
	}
	v := f.checkUncached(query)
	v.Fingerprint = fingerprint(norm)
	if v.exact {
		key = query
	}
	f.cache.Set(key, v, 1)
	return v
}

// fingerprint is FNV-1a, 64-bit: stable across processes, so counts of
// distinct statements can be merged across sidecars.
func fingerprint(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// checkUncached classifies query on the real parser, with no cache.
func (f *Firewall) checkUncached(query string) *Verdict {
	tree, err := pg_query.Parse(query)
	if err != nil {
		return &Verdict{Rule: "syntax", Reason: err.Error(), Syntax: true}
	}
	v := &Verdict{}
	for _, raw := range tree.Stmts {
		if raw.Stmt == nil {
			continue
		}
		f.statement(v, raw.Stmt)
		if v.Refused() {
			return v
		}
	}
	f.analyzeCache(v, tree)
	return v
}

func (v *Verdict) refuse(rule, format string, args ...any) {
	if v.Rule == "" {
		v.Rule = rule
		v.Reason = fmt.Sprintf(format, args...)
	}
}
