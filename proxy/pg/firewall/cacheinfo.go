package firewall

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// What the result cache (proxy/pg, resultcache*.go) needs of a query.
//
// A result may be cached only when it is a function of the rows of the
// tables the statement reads, its constants and parameters, and the
// session settings the cache keys on. The analysis is conservative: a
// single SELECT (or VALUES) built only of the node types listed in
// cacheableNodes, calling only the functions of deterministicFunctions (or
// ones the policy declares stable), casting to date and time types only
// constants and parameters (the text 'now' read as a timestamp is the
// current time: the proxy checks constants and parameters for such words,
// MentionsCurrentTime), with no locking clause, no SELECT INTO, no
// TABLESAMPLE and no data-modifying CTE. Anything else is not cacheable,
// with a reason.
//
// Like the rest of a Verdict, the analysis reads names and keywords only,
// never a constant's value, so it is shared by every text of one shape.
// Which relations a statement reads is scoped: a name that refers to a CTE
// of an enclosing WITH is not a table (a non-recursive CTE sees only the
// CTEs before it, a recursive one all of its WITH's).
//
// The write side is computed for every statement the firewall allows: the
// tables it names as targets of INSERT, UPDATE, DELETE, MERGE and COPY
// FROM (inside CTEs too), and whether it may change tables it does not name
// (CALL, DDL, functions not known to leave tables alone).

// CacheInfo is the result cache's view of a query.
type CacheInfo struct {
	// Cacheable: the query's result may be cached, provided every function
	// in Functions is declared stable by the policy.
	Cacheable bool
	// Reason says why the query is not cacheable.
	Reason string
	// Reads are the relations a cacheable query reads.
	Reads []Relation
	// Functions are the functions the query calls that are neither known
	// builtins nor known to leave tables alone, as written (lower case,
	// "schema.name" when qualified). A query calling one is cacheable only
	// if the policy declares it stable, and may write tables otherwise.
	Functions []string
	// Writes are the tables the query names as write targets.
	Writes []Relation
	// WritesUnknown: the query may change tables it does not name (CALL,
	// DDL, SELECT INTO).
	WritesUnknown bool
	// Settings are the settings the query SETs or RESETs, lower case
	// ("transaction" for SET TRANSACTION, "session characteristics" for SET
	// SESSION CHARACTERISTICS). SettingsLocal: all of them with SET LOCAL
	// or SET TRANSACTION, undone when the transaction ends.
	Settings      []string
	SettingsLocal bool
	// Begin: the query starts a transaction (BEGIN, START TRANSACTION), with
	// these options (-1 off, 0 the session's default, 1 on) and isolation
	// level ("" the session's default).
	Begin          bool
	BeginReadOnly  int8
	BeginIsolation string
	// DDL: the query changes the schema or session-level objects (temporary
	// tables, cursors, prepared statements).
	DDL bool
}

// Relation is a relation as a statement names it: Schema "" when
// unqualified; both lower case unless quoted.
type Relation struct {
	Schema, Name string
}

func (r Relation) String() string {
	if r.Schema == "" {
		return r.Name
	}
	return r.Schema + "." + r.Name
}

// analyzeCache fills v.Cache for a parsed query the rules allowed.
func (f *Firewall) analyzeCache(v *Verdict, tree *pg_query.ParseResult) {
	ci := &CacheInfo{}
	v.Cache = ci
	var stmts []*pg_query.Node
	for _, raw := range tree.Stmts {
		if raw.Stmt != nil {
			stmts = append(stmts, raw.Stmt)
		}
	}
	protected := strings.ToLower(f.cfg.ProtectedSchema)
	for _, n := range stmts {
		ci.writes(n, protected)
	}
	switch {
	case len(stmts) != 1:
		ci.Reason = "not a single statement"
	case stmts[0].GetSelectStmt() == nil:
		ci.Reason = "not a SELECT"
	default:
		w := &readWalker{ci: ci, protected: protected}
		w.walk(stmts[0].ProtoReflect())
		if w.reason != "" {
			ci.Reason = w.reason
			ci.Reads = nil
		} else {
			ci.Cacheable = true
		}
	}
	ci.Reads = dedupRelations(ci.Reads)
	ci.Writes = dedupRelations(ci.Writes)
	ci.Functions = dedupStrings(ci.Functions)
}

// writes records what one statement may change, and its SET, BEGIN and DDL
// facts.
func (ci *CacheInfo) writes(n *pg_query.Node, protected string) {
	switch s := n.Node.(type) {
	case *pg_query.Node_VariableSetStmt:
		vs := s.VariableSetStmt
		name := strings.ToLower(vs.Name)
		switch vs.Kind {
		case pg_query.VariableSetKind_VAR_RESET_ALL:
			name = "all"
		case pg_query.VariableSetKind_VAR_SET_MULTI:
			// SET TRANSACTION … and SET SESSION CHARACTERISTICS AS TRANSACTION …
			name = strings.ReplaceAll(name, "_", " ")
		}
		local := vs.IsLocal || name == "transaction"
		if len(ci.Settings) == 0 {
			ci.SettingsLocal = local
		} else {
			ci.SettingsLocal = ci.SettingsLocal && local
		}
		ci.Settings = append(ci.Settings, name)
		return
	case *pg_query.Node_TransactionStmt:
		ts := s.TransactionStmt
		if ts.Kind == pg_query.TransactionStmtKind_TRANS_STMT_BEGIN || ts.Kind == pg_query.TransactionStmtKind_TRANS_STMT_START {
			ci.Begin = true
			for _, o := range ts.Options {
				d := o.GetDefElem()
				if d == nil {
					continue
				}
				switch d.Defname {
				case "transaction_read_only":
					ci.BeginReadOnly = -1
					if c := d.Arg.GetAConst(); c != nil && c.GetIval() != nil && c.GetIval().Ival != 0 {
						ci.BeginReadOnly = 1
					}
				case "transaction_isolation":
					if c := d.Arg.GetAConst(); c != nil && c.GetSval() != nil {
						ci.BeginIsolation = strings.ToLower(c.GetSval().Sval)
					} else {
						ci.BeginIsolation = "unknown"
					}
				}
			}
		}
		return
	case *pg_query.Node_CallStmt:
		ci.WritesUnknown = true
	case *pg_query.Node_CopyStmt:
		if s.CopyStmt.IsFrom && s.CopyStmt.Relation != nil {
			ci.Writes = append(ci.Writes, relationOf(s.CopyStmt.Relation))
		}
	case *pg_query.Node_SelectStmt:
		if s.SelectStmt.IntoClause != nil {
			ci.WritesUnknown, ci.DDL = true, true
		}
	case *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt,
		*pg_query.Node_ExplainStmt, *pg_query.Node_VariableShowStmt, *pg_query.Node_FetchStmt,
		*pg_query.Node_ListenStmt, *pg_query.Node_UnlistenStmt, *pg_query.Node_NotifyStmt,
		*pg_query.Node_LockStmt, *pg_query.Node_ClosePortalStmt:
	case *pg_query.Node_DeclareCursorStmt, *pg_query.Node_PrepareStmt, *pg_query.Node_ExecuteStmt,
		*pg_query.Node_DeallocateStmt, *pg_query.Node_DiscardStmt:
		// Session objects: an EXECUTE runs a statement the firewall saw at
		// PREPARE, whose writes are not known here.
		ci.DDL = true
		if n.GetExecuteStmt() != nil {
			ci.WritesUnknown = true
		}
	case *pg_query.Node_CreateStmt:
		// A temporary table changes no other table; any other can change
		// what names resolve to.
		ci.DDL = true
		ci.WritesUnknown = s.CreateStmt.Relation == nil || s.CreateStmt.Relation.Relpersistence != "t"
	default:
		// Schema changes (CREATE, ALTER, DROP, …).
		ci.DDL, ci.WritesUnknown = true, true
	}
	collectWrites(ci, n.ProtoReflect(), protected)
}

// collectWrites records the write targets and unknown functions below m.
func collectWrites(ci *CacheInfo, m protoreflect.Message, protected string) {
	if !m.IsValid() {
		return
	}
	switch x := m.Interface().(type) {
	case *pg_query.InsertStmt:
		ci.Writes = appendRel(ci.Writes, x.Relation)
	case *pg_query.UpdateStmt:
		ci.Writes = appendRel(ci.Writes, x.Relation)
	case *pg_query.DeleteStmt:
		ci.Writes = appendRel(ci.Writes, x.Relation)
	case *pg_query.MergeStmt:
		ci.Writes = appendRel(ci.Writes, x.Relation)
	case *pg_query.FuncCall:
		name, schema := funcName(x)
		if classifyFunction(schema, name) == fnUnknown && !(schema == protected && name == "current_tenant") {
			ci.Functions = append(ci.Functions, qualified(schema, name))
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := val.List()
				for i := 0; i < l.Len(); i++ {
					collectWrites(ci, l.Get(i).Message(), protected)
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			collectWrites(ci, val.Message(), protected)
		}
		return true
	})
}

func appendRel(dst []Relation, rv *pg_query.RangeVar) []Relation {
	if rv == nil {
		return dst
	}
	return append(dst, relationOf(rv))
}

// relationOf is a RangeVar's name. The parser has already folded unquoted
// names to lower case and kept quoted ones.
func relationOf(rv *pg_query.RangeVar) Relation {
	return Relation{Schema: rv.Schemaname, Name: rv.Relname}
}

// readWalker walks a SELECT for the cache: the relations it reads, and the
// first reason it is not cacheable.
type readWalker struct {
	ci        *CacheInfo
	protected string
	ctes      []string // CTE names in scope, innermost last
	reason    string
}

func (w *readWalker) fail(reason string) {
	if w.reason == "" {
		w.reason = reason
	}
}

// cacheableNodes are the parse-tree nodes a cacheable SELECT may contain;
// FuncCall, TypeCast, RangeVar, SelectStmt and CommonTableExpr are checked
// further. Anything else (TABLESAMPLE, XMLTABLE, JSON_TABLE, SQL/JSON and
// XML expressions, locking clauses, SELECT INTO, statements in CTEs, …)
// makes the query uncacheable.
var cacheableNodes = map[protoreflect.Name]bool{
	"Node": true, "List": true, "SelectStmt": true, "ResTarget": true, "ColumnRef": true,
	"A_Star": true, "A_Const": true, "Integer": true, "Float": true, "Boolean": true, "String": true,
	"BitString": true, "ParamRef": true, "A_Expr": true, "BoolExpr": true, "FuncCall": true,
	"TypeCast": true, "TypeName": true, "RangeVar": true, "Alias": true, "JoinExpr": true,
	"RangeSubselect": true, "RangeFunction": true, "SubLink": true, "SortBy": true, "WindowDef": true,
	"WithClause": true, "CommonTableExpr": true, "CTESearchClause": true, "CTECycleClause": true,
	"NullTest": true, "BooleanTest": true, "CaseExpr": true, "CaseWhen": true, "CoalesceExpr": true,
	"MinMaxExpr": true, "RowExpr": true, "A_ArrayExpr": true, "A_Indices": true, "A_Indirection": true,
	"CollateClause": true, "GroupingSet": true, "GroupingFunc": true, "ColumnDef": true,
}

func (w *readWalker) walk(m protoreflect.Message) {
	if w.reason != "" || !m.IsValid() {
		return
	}
	name := m.Descriptor().Name()
	if !cacheableNodes[name] {
		w.fail("it contains " + describeNode(name))
		return
	}
	switch x := m.Interface().(type) {
	case *pg_query.SelectStmt:
		w.selectStmt(x)
		return
	case *pg_query.RangeVar:
		w.rangeVar(x)
		return
	case *pg_query.FuncCall:
		w.funcCall(x)
	case *pg_query.TypeCast:
		w.typeCast(x)
	case *pg_query.A_Expr:
		if len(x.Name) > 1 {
			if s := x.Name[0].GetString_(); s == nil || strings.ToLower(s.Sval) != "pg_catalog" {
				w.fail("it calls an operator outside pg_catalog")
				return
			}
		}
	}
	w.fields(m, "")
}

// fields walks m's message fields, except the one named skip.
func (w *readWalker) fields(m protoreflect.Message, skip protoreflect.Name) {
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		if fd.Name() == skip {
			return true
		}
		switch {
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := val.List()
				for i := 0; i < l.Len(); i++ {
					w.walk(l.Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			w.walk(val.Message())
		}
		return w.reason == ""
	})
}

func (w *readWalker) selectStmt(s *pg_query.SelectStmt) {
	switch {
	case s.IntoClause != nil:
		w.fail("it is SELECT INTO")
		return
	case len(s.LockingClause) > 0:
		w.fail("it locks rows (FOR UPDATE/SHARE)")
		return
	}
	depth := len(w.ctes)
	defer func() { w.ctes = w.ctes[:depth] }()
	if wc := s.WithClause; wc != nil {
		var names []string
		for _, c := range wc.Ctes {
			if cte := c.GetCommonTableExpr(); cte != nil {
				names = append(names, cte.Ctename)
			}
		}
		for i, c := range wc.Ctes {
			cte := c.GetCommonTableExpr()
			if cte == nil {
				w.fail("it has an unexpected WITH entry")
				return
			}
			if cte.Ctequery.GetSelectStmt() == nil {
				w.fail("it has a data-modifying WITH")
				return
			}
			// A non-recursive CTE sees the CTEs before it; a recursive
			// WITH's see all of them, themselves included.
			visible := names[:i]
			if wc.Recursive {
				visible = names
			}
			w.ctes = append(w.ctes[:depth], visible...)
			w.walk(c.ProtoReflect())
			if w.reason != "" {
				return
			}
		}
		w.ctes = append(w.ctes[:depth], names...)
	}
	w.fields(s.ProtoReflect(), "with_clause")
}

func (w *readWalker) rangeVar(rv *pg_query.RangeVar) {
	if rv.Catalogname != "" {
		w.fail("it names a relation with a database qualifier")
		return
	}
	if rv.Schemaname == "" {
		for i := len(w.ctes) - 1; i >= 0; i-- {
			if w.ctes[i] == rv.Relname {
				return // a CTE, not a table
			}
		}
	}
	if strings.EqualFold(rv.Schemaname, "pg_temp") || rv.Relpersistence == "t" {
		w.fail("it reads a temporary table")
		return
	}
	w.ci.Reads = append(w.ci.Reads, relationOf(rv))
}

func (w *readWalker) funcCall(fc *pg_query.FuncCall) {
	name, schema := funcName(fc)
	if schema == w.protected && name == "current_tenant" {
		return // the bound tenant: part of every cache key
	}
	switch classifyFunction(schema, name) {
	case fnDeterministic:
		if name == "age" && len(fc.Args) < 2 {
			w.fail("age() with one argument reads the current date")
		}
	case fnUnknown:
		// Cacheable only if the policy declares it stable.
		w.ci.Functions = append(w.ci.Functions, qualified(schema, name))
	default:
		w.fail(name + "() is volatile or reads session state")
	}
}

// timeTypes are the types whose input reads the clock for 'now', 'today',
// 'tomorrow' and 'yesterday' (PostgreSQL's datetime special values).
var timeTypes = map[string]bool{
	"date": true, "time": true, "timetz": true, "timestamp": true, "timestamptz": true,
	"abstime": true, "reltime": true, "smalldatetime": true,
}

// castTypes are the types a cacheable query may cast to, beside timeTypes
// (for which only constants and parameters may be cast). Casts to other
// types (reg* types, which look names up in the catalog; domains and user
// types, whose input functions are unknown) are not cacheable.
var castTypes = map[string]bool{
	"bool": true, "int2": true, "int4": true, "int8": true, "float4": true, "float8": true,
	"numeric": true, "text": true, "varchar": true, "bpchar": true, "char": true, "name": true,
	"bytea": true, "json": true, "jsonb": true, "uuid": true, "interval": true, "inet": true,
	"cidr": true, "macaddr": true, "bit": true, "varbit": true, "money": true, "oid": true,
	"tsvector": true, "tsquery": true, "point": true, "int4range": true, "int8range": true,
	"numrange": true, "daterange": true, "tsrange": true, "tstzrange": true,
}

func (w *readWalker) typeCast(tc *pg_query.TypeCast) {
	tn := tc.TypeName
	if tn == nil || len(tn.Names) == 0 {
		w.fail("it casts to an unnamed type")
		return
	}
	var parts []string
	for _, n := range tn.Names {
		if s := n.GetString_(); s != nil {
			parts = append(parts, strings.ToLower(s.Sval))
		}
	}
	if len(parts) == 0 || len(parts) > 2 || len(parts) == 2 && parts[0] != "pg_catalog" || tn.PctType || tn.Setof {
		w.fail("it casts to a type outside pg_catalog")
		return
	}
	typ := parts[len(parts)-1]
	switch {
	case timeTypes[typ]:
		// Text read as a timestamp may be 'now': only constants and
		// parameters, whose values the proxy checks, may be cast.
		if tc.Arg.GetAConst() == nil && tc.Arg.GetParamRef() == nil {
			w.fail("it casts an expression to " + typ)
		}
	case !castTypes[typ]:
		w.fail("it casts to " + typ)
	}
}

// describeNode names a parse node for a reason.
func describeNode(n protoreflect.Name) string {
	switch n {
	case "RangeTableSample":
		return "TABLESAMPLE"
	case "LockingClause":
		return "a locking clause"
	case "IntoClause":
		return "SELECT INTO"
	case "SQLValueFunction":
		return "a current-time or session function (CURRENT_DATE, CURRENT_USER, …)"
	case "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt":
		return "a data-modifying statement"
	}
	return string(n)
}

// funcName returns a call's function name and schema ("" if unqualified),
// lower case.
func funcName(fc *pg_query.FuncCall) (name, schema string) {
	var parts []string
	for _, n := range fc.Funcname {
		if s := n.GetString_(); s != nil {
			parts = append(parts, strings.ToLower(s.Sval))
		}
	}
	switch len(parts) {
	case 0:
		return "", ""
	case 1:
		return parts[0], ""
	}
	return parts[len(parts)-1], strings.Join(parts[:len(parts)-1], ".")
}

func qualified(schema, name string) string {
	if schema == "" {
		return name
	}
	return schema + "." + name
}

type fnClass uint8

const (
	fnUnknown       fnClass = iota // not known: may write, cacheable only if declared stable
	fnDeterministic                // a builtin whose result follows from its arguments and keyed settings
	fnPure                         // a builtin that changes no table but is volatile or reads session state
)

// classifyFunction classifies a builtin by name. Names resolve to
// pg_catalog first unless the search path says otherwise; the cache trusts
// that an administrator has not shadowed builtins with other functions.
func classifyFunction(schema, name string) fnClass {
	if schema != "" && schema != "pg_catalog" {
		return fnUnknown
	}
	if deterministicFunctions[name] {
		return fnDeterministic
	}
	if pureFunctions[name] {
		return fnPure
	}
	for _, p := range pureFunctionPrefixes {
		if strings.HasPrefix(name, p) {
			return fnPure
		}
	}
	if _, denied := deniedFunctions[name]; denied {
		return fnPure // refused before it runs
	}
	return fnUnknown
}

// deterministicFunctions are builtins whose result follows from their
// arguments and the settings the cache keys on (TimeZone, DateStyle,
// IntervalStyle, extra_float_digits, bytea_output, search_path): immutable
// ones, and stable ones that read only those settings. Aggregates and
// window functions are deterministic over their input rows.
var deterministicFunctions = setOf(
	// aggregates
	"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg",
	"json_object_agg", "jsonb_object_agg", "bool_and", "bool_or", "every", "bit_and", "bit_or", "bit_xor",
	"stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "mode",
	"percentile_cont", "percentile_disc", "corr", "covar_pop", "covar_samp", "regr_avgx", "regr_avgy",
	"regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy",
	// window functions
	"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
	"first_value", "last_value", "nth_value",
	// mathematics
	"abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "exp", "ln", "log",
	"log10", "power", "pow", "mod", "div", "pi", "degrees", "radians", "sin", "cos", "tan", "cot",
	"asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "width_bucket", "gcd", "lcm", "factorial",
	"scale", "min_scale", "trim_scale",
	// strings
	"length", "char_length", "character_length", "octet_length", "bit_length", "lower", "upper",
	"initcap", "btrim", "ltrim", "rtrim", "trim", "lpad", "rpad", "substr", "substring", "position",
	"strpos", "replace", "concat", "concat_ws", "left", "right", "reverse", "repeat", "split_part",
	"starts_with", "format", "md5", "sha224", "sha256", "sha384", "sha512", "encode", "decode",
	"translate", "regexp_replace", "regexp_match", "regexp_matches", "regexp_split_to_array",
	"regexp_split_to_table", "regexp_count", "regexp_instr", "regexp_like", "regexp_substr",
	"to_hex", "ascii", "chr", "quote_ident", "quote_literal", "quote_nullable", "overlay",
	"string_to_array", "string_to_table", "array_to_string", "unistr", "normalize", "casefold",
	// arrays
	"array_length", "array_lower", "array_upper", "cardinality", "array_position", "array_positions",
	"array_append", "array_prepend", "array_cat", "array_remove", "array_replace", "unnest",
	"array_dims", "array_ndims", "array_fill", "trim_array", "generate_subscripts",
	// JSON
	"json_build_object", "jsonb_build_object", "json_build_array", "jsonb_build_array", "to_json",
	"to_jsonb", "row_to_json", "array_to_json", "json_array_length", "jsonb_array_length",
	"json_extract_path", "jsonb_extract_path", "json_extract_path_text", "jsonb_extract_path_text",
	"jsonb_set", "jsonb_set_lax", "jsonb_insert", "jsonb_strip_nulls", "json_strip_nulls", "jsonb_pretty",
	"json_typeof", "jsonb_typeof", "json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
	"json_array_elements", "jsonb_array_elements", "json_array_elements_text",
	"jsonb_array_elements_text", "json_object_keys", "jsonb_object_keys", "json_object", "jsonb_object",
	"jsonb_path_query", "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query_array",
	"jsonb_path_query_first", "json_populate_record", "jsonb_populate_record", "json_to_record",
	"jsonb_to_record", "json_to_recordset", "jsonb_to_recordset",
	// dates and times, without the clock (TimeZone and DateStyle are keyed)
	"date_part", "date_trunc", "extract", "make_date", "make_time", "make_timestamp",
	"make_timestamptz", "make_interval", "age", "to_char", "to_date", "to_timestamp", "to_number",
	"date_bin", "justify_days", "justify_hours", "justify_interval", "isfinite", "timezone", "overlaps",
	// text search (default_text_search_config is the server's: a client's SET of it is not cached)
	"to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery",
	"ts_rank", "ts_rank_cd", "ts_headline", "setweight", "strip", "numnode", "querytree",
	// ranges, series, nulls, sizes
	"lower_inc", "upper_inc", "lower_inf", "upper_inf", "isempty", "range_merge", "int4range",
	"int8range", "numrange", "daterange", "tsrange", "tstzrange", "generate_series", "num_nonnulls",
	"num_nulls", "pg_size_pretty", "pg_size_bytes", "host", "masklen", "netmask", "network", "family",
	"similar_to_escape", "like_escape",
)

// pureFunctions change no table but are not cacheable: they read the clock,
// a sequence, the transaction, the session or the catalog, or are random.
var pureFunctions = setOf(
	"now", "statement_timestamp", "transaction_timestamp", "clock_timestamp", "timeofday",
	"random", "random_normal", "setseed", "gen_random_uuid", "uuidv4", "uuidv7",
	"nextval", "currval", "lastval", "setval", "pg_backend_pid", "pg_notify", "current_setting",
	"current_database", "current_schema", "current_schemas", "current_user", "current_role",
	"session_user", "current_query", "version", "pg_postmaster_start_time", "pg_conf_load_time",
	"pg_typeof", "format_type", "obj_description", "col_description", "shobj_description",
	"pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size",
	"pg_database_size", "pg_column_size", "pg_trigger_depth", "row_security_active",
	"crypt", "gen_salt", "gen_random_bytes", "digest", "hmac", "encrypt", "decrypt",
)

var pureFunctionPrefixes = []string{
	"pg_advisory_", "pg_try_advisory_", "txid_", "pg_current_", "pg_snapshot_", "pg_xact_",
	"pg_sleep", "pg_get_", "has_", "pg_has_", "pg_is_", "pg_stat_", "inet_", "to_reg", "uuid_generate_",
	"pg_visible_in_snapshot", "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible",
}

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func dedupRelations(rs []Relation) []Relation {
	if len(rs) < 2 {
		return rs
	}
	out := rs[:0]
	seen := map[Relation]bool{}
	for _, r := range rs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

func dedupStrings(ss []string) []string {
	if len(ss) < 2 {
		return ss
	}
	out := ss[:0]
	seen := map[string]bool{}
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// MentionsCurrentTime reports whether a string constant of text may read as
// the clock when converted to a date or time ('now', 'today', 'tomorrow',
// 'yesterday', any case, anywhere in the literal), or whether it cannot
// tell (text the lexer is unsure of): such a query's result is not cached.
// Escape strings are read with their backslashes removed (E'n\ow' is
// 'now').
func MentionsCurrentTime(text string) bool {
	l := lexer{s: text}
	for {
		tok, st := l.next()
		switch st {
		case lexEOF:
			return false
		case lexUnsure:
			return true
		}
		switch tok.kind {
		case tkString, tkEscapeString, tkNationalString, tkUnicodeString, tkDollarString:
			lit := text[tok.start:tok.end]
			if tok.kind == tkEscapeString || tok.kind == tkUnicodeString {
				lit = strings.ReplaceAll(lit, `\`, "")
			}
			if ValueMentionsCurrentTime([]byte(lit)) {
				return true
			}
		}
	}
}

// ValueMentionsCurrentTime is MentionsCurrentTime for a parameter value
// sent as text.
func ValueMentionsCurrentTime(v []byte) bool {
	for i := 0; i+3 <= len(v); i++ {
		switch lower[v[i]] {
		case 'n':
			if hasFold(v[i:], "now") {
				return true
			}
		case 't':
			if hasFold(v[i:], "today") || hasFold(v[i:], "tomorrow") {
				return true
			}
		case 'y':
			if hasFold(v[i:], "yesterday") {
				return true
			}
		}
	}
	return false
}

// hasFold reports whether b starts with the lower-case word w, ASCII case
// folded.
func hasFold(b []byte, w string) bool {
	if len(b) < len(w) {
		return false
	}
	for i := 0; i < len(w); i++ {
		if lower[b[i]] != w[i] {
			return false
		}
	}
	return true
}
