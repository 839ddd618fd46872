package firewall

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// statement classifies one top-level statement into v.
func (f *Firewall) statement(v *Verdict, n *pg_query.Node) {
	switch s := n.Node.(type) {
	case *pg_query.Node_SelectStmt:
		v.Class |= Read
		if s.SelectStmt.IntoClause != nil {
			v.Class |= DDL // SELECT INTO creates a table
		}
		if len(s.SelectStmt.LockingClause) > 0 {
			v.Class |= Write
		}
	case *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
		v.Class |= Write
	case *pg_query.Node_VariableSetStmt:
		f.set(v, s.VariableSetStmt)
		return // the value is not an expression worth walking
	case *pg_query.Node_VariableShowStmt:
		v.Class |= Read
		return
	case *pg_query.Node_TransactionStmt:
		switch s.TransactionStmt.Kind {
		case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE,
			pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED,
			pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
			v.refuse("two-phase-commit", "PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED are not allowed: a prepared transaction outlives the tenant's session")
		}
		return
	case *pg_query.Node_DiscardStmt:
		if s.DiscardStmt.Target == pg_query.DiscardMode_DISCARD_ALL {
			v.refuse("tenant-binding", "DISCARD ALL is not allowed: it would reset the tenant binding")
			return
		}
		v.SessionState = true
		return
	case *pg_query.Node_CopyStmt:
		c := s.CopyStmt
		if c.IsProgram || c.Filename != "" {
			v.refuse("copy-file-program", "COPY to or from a server file or program is not allowed; use COPY … FROM STDIN or TO STDOUT")
			return
		}
		if c.IsFrom {
			v.Class |= Write
			v.CopyFrom = c.Relation != nil // COPY … FROM STDIN into a table (see CopyTarget)
		} else {
			v.Class |= Read
		}
	case *pg_query.Node_ExplainStmt:
		for _, o := range s.ExplainStmt.Options {
			if d := o.GetDefElem(); d != nil && strings.EqualFold(d.Defname, "analyze") {
				v.refuse("explain-analyze", "EXPLAIN ANALYZE is not allowed: it executes the statement outside the firewall's view of its effects")
				return
			}
		}
		v.Class |= Read
		inner := &Verdict{}
		if s.ExplainStmt.Query != nil {
			f.statement(inner, s.ExplainStmt.Query)
		}
		if inner.Refused() {
			v.refuse(inner.Rule, "%s", inner.Reason)
		}
		return
	case *pg_query.Node_DeclareCursorStmt:
		const cursorOptHold = 0x0020
		if s.DeclareCursorStmt.Options&cursorOptHold != 0 {
			v.HoldCursor = true
			v.SessionState = true
		}
		v.Class |= Read
	case *pg_query.Node_FetchStmt, *pg_query.Node_ClosePortalStmt:
		v.Class |= Read
		return
	case *pg_query.Node_PrepareStmt:
		v.SQLPrepare = true
		v.SessionState = true
	case *pg_query.Node_ExecuteStmt, *pg_query.Node_DeallocateStmt:
		v.SessionState = true
	case *pg_query.Node_ListenStmt, *pg_query.Node_UnlistenStmt:
		// Answered by the proxy, which listens for the tenant (Channels).
		v.Listen = true
		return
	case *pg_query.Node_NotifyStmt:
		// Sent on the tenant's namespaced channel (NamespaceNotify).
		v.Notify = true
		return
	case *pg_query.Node_DoStmt:
		v.refuse("do-block", "DO blocks are not allowed: their code runs outside the statement firewall")
		return
	case *pg_query.Node_CreateFunctionStmt:
		v.refuse("create-function", "creating functions or procedures is not allowed")
		return
	case *pg_query.Node_CallStmt:
		v.Class |= Write
	case *pg_query.Node_LockStmt:
		v.Class |= Write
	case *pg_query.Node_TruncateStmt:
		v.refuse("truncate", "TRUNCATE is not allowed: it bypasses row-level security")
		return
	case *pg_query.Node_AlterRoleStmt, *pg_query.Node_AlterRoleSetStmt, *pg_query.Node_CreateRoleStmt,
		*pg_query.Node_DropRoleStmt, *pg_query.Node_GrantRoleStmt, *pg_query.Node_AlterDatabaseStmt,
		*pg_query.Node_AlterDatabaseSetStmt, *pg_query.Node_AlterSystemStmt, *pg_query.Node_GrantStmt,
		*pg_query.Node_AlterDefaultPrivilegesStmt, *pg_query.Node_AlterOwnerStmt, *pg_query.Node_ReassignOwnedStmt,
		*pg_query.Node_DropOwnedStmt:
		v.refuse("roles-and-privileges", "changing roles, privileges, databases or server settings is not allowed")
		return
	case *pg_query.Node_CreateForeignServerStmt, *pg_query.Node_AlterForeignServerStmt, *pg_query.Node_CreateUserMappingStmt,
		*pg_query.Node_AlterUserMappingStmt, *pg_query.Node_CreateForeignTableStmt, *pg_query.Node_ImportForeignSchemaStmt,
		*pg_query.Node_CreateFdwStmt, *pg_query.Node_AlterFdwStmt, *pg_query.Node_CreateExtensionStmt,
		*pg_query.Node_AlterExtensionStmt, *pg_query.Node_AlterExtensionContentsStmt:
		v.refuse("dblink-fdw", "foreign servers, foreign tables and extensions are not allowed")
		return
	case *pg_query.Node_CreatePolicyStmt, *pg_query.Node_AlterPolicyStmt:
		v.refuse("row-security", "changing row-level security policies is not allowed")
		return
	case *pg_query.Node_AlterTableStmt:
		for _, c := range s.AlterTableStmt.Cmds {
			if cmd := c.GetAlterTableCmd(); cmd != nil {
				switch cmd.Subtype {
				case pg_query.AlterTableType_AT_EnableRowSecurity, pg_query.AlterTableType_AT_DisableRowSecurity,
					pg_query.AlterTableType_AT_ForceRowSecurity, pg_query.AlterTableType_AT_NoForceRowSecurity:
					v.refuse("row-security", "changing a table's row-level security is not allowed")
					return
				}
			}
		}
		v.Class |= DDL
	case *pg_query.Node_DropStmt:
		if s.DropStmt.RemoveType == pg_query.ObjectType_OBJECT_POLICY {
			v.refuse("row-security", "dropping row-level security policies is not allowed")
			return
		}
		v.Class |= DDL
	case *pg_query.Node_LoadStmt, *pg_query.Node_CheckPointStmt, *pg_query.Node_VacuumStmt, *pg_query.Node_ClusterStmt,
		*pg_query.Node_ReindexStmt, *pg_query.Node_CreateTableSpaceStmt, *pg_query.Node_DropTableSpaceStmt,
		*pg_query.Node_CreateSubscriptionStmt, *pg_query.Node_AlterSubscriptionStmt, *pg_query.Node_DropSubscriptionStmt,
		*pg_query.Node_CreatePublicationStmt, *pg_query.Node_AlterPublicationStmt, *pg_query.Node_CreateEventTrigStmt,
		*pg_query.Node_AlterEventTrigStmt, *pg_query.Node_CreatedbStmt, *pg_query.Node_DropdbStmt,
		*pg_query.Node_CreateConversionStmt, *pg_query.Node_CreatePlangStmt:
		v.refuse("server-administration", "server administration statements are not allowed")
		return
	case *pg_query.Node_CreateStmt, *pg_query.Node_CreateTableAsStmt, *pg_query.Node_ViewStmt, *pg_query.Node_IndexStmt,
		*pg_query.Node_CreateSeqStmt, *pg_query.Node_AlterSeqStmt, *pg_query.Node_CreateSchemaStmt, *pg_query.Node_RenameStmt,
		*pg_query.Node_CommentStmt, *pg_query.Node_CreateEnumStmt, *pg_query.Node_AlterEnumStmt, *pg_query.Node_CompositeTypeStmt,
		*pg_query.Node_CreateDomainStmt, *pg_query.Node_AlterDomainStmt, *pg_query.Node_CreateTrigStmt, *pg_query.Node_RuleStmt,
		*pg_query.Node_RefreshMatViewStmt, *pg_query.Node_CreateStatsStmt, *pg_query.Node_AlterObjectSchemaStmt,
		*pg_query.Node_DefineStmt, *pg_query.Node_CreateCastStmt, *pg_query.Node_CreateOpClassStmt, *pg_query.Node_AlterTableMoveAllStmt:
		v.Class |= DDL
		if cs := n.GetCreateStmt(); cs != nil && cs.Relation != nil && cs.Relation.Relpersistence == "t" {
			v.SessionState = true
		}
		if ct := n.GetCreateTableAsStmt(); ct != nil && ct.Into != nil && ct.Into.Rel != nil && ct.Into.Rel.Relpersistence == "t" {
			v.SessionState = true
		}
	default:
		v.refuse("unclassified", "statement type %s is not recognised by the firewall and is denied by default", nodeName(n))
		return
	}
	f.walk(v, n.ProtoReflect())
}

// set classifies SET, SET LOCAL, RESET and RESET ALL.
func (f *Firewall) set(v *Verdict, s *pg_query.VariableSetStmt) {
	if s.Kind == pg_query.VariableSetKind_VAR_RESET_ALL {
		v.refuse("tenant-binding", "RESET ALL is not allowed: it would reset the tenant binding")
		return
	}
	name := strings.ToLower(s.Name)
	switch {
	case name == strings.ToLower(f.cfg.BindingSetting) || strings.HasPrefix(name, "tenantguard."):
		v.refuse("tenant-binding", "the tenant binding %s cannot be set or reset", f.cfg.BindingSetting)
		return
	case name == "role" || name == "session_authorization":
		v.refuse("role-switch", "SET ROLE and SET SESSION AUTHORIZATION are not allowed")
		return
	case name == "statement_timeout":
		v.SetsStatementTimeout = true
	case name == "session_replication_role" || name == "row_security":
		v.refuse("row-security", "changing %s is not allowed", name)
		return
	case name == "client_encoding" || name == "standard_conforming_strings":
		// The firewall parses as UTF8 with standard-conforming strings, the
		// values the proxy sets on every connection. Under another client
		// encoding (GBK eats the backslash of \' inside E'…') or with
		// backslash escapes in '…', the server would read other statements
		// than the firewall checked. Setting the same value again is
		// harmless, and common (drivers do it at connect).
		v.exact = true
		if s.Kind == pg_query.VariableSetKind_VAR_SET_VALUE && !keepsParsedValue(name, s.Args) {
			v.refuse("encoding", "%s cannot be changed: the firewall reads statements as UTF8 with standard_conforming_strings on, as the server does", name)
			return
		}
	}
	if !s.IsLocal {
		v.SessionState = true
	}
}

// keepsParsedValue reports whether SET name TO args sets the value the
// firewall parses with: client_encoding UTF8 (by PostgreSQL's
// pg_char_to_encoding: case and punctuation ignored, UNICODE an alias),
// standard_conforming_strings on (by parse_bool).
func keepsParsedValue(name string, args []*pg_query.Node) bool {
	if len(args) != 1 {
		return false
	}
	c := args[0].GetAConst()
	if c == nil {
		return false
	}
	var val string
	switch {
	case c.GetSval() != nil:
		val = c.GetSval().Sval
	case c.GetIval() != nil:
		val = strconv.Itoa(int(c.GetIval().Ival))
	default:
		return false
	}
	val = strings.ToLower(val)
	if name == "client_encoding" {
		clean := strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
				return r
			}
			return -1
		}, val)
		return clean == "utf8" || clean == "unicode"
	}
	// parse_bool: a prefix of true or yes, on, or 1.
	return val != "" && (strings.HasPrefix("true", val) || strings.HasPrefix("yes", val)) ||
		val == "on" || val == "1"
}

// walk visits every node below m and applies the expression rules.
func (f *Firewall) walk(v *Verdict, m protoreflect.Message) {
	if v.Refused() || !m.IsValid() {
		return
	}
	switch x := m.Interface().(type) {
	case *pg_query.FuncCall:
		f.funcCall(v, x)
	case *pg_query.RangeVar:
		f.relation(v, x)
	case *pg_query.UpdateStmt:
		v.Class |= Write // also inside WITH: data-modifying CTEs
		if x.Relation != nil && strings.EqualFold(x.Relation.Relname, "pg_settings") {
			v.refuse("tenant-binding", "UPDATE pg_settings is not allowed: it is set_config by another name")
		}
	case *pg_query.InsertStmt, *pg_query.DeleteStmt, *pg_query.MergeStmt:
		v.Class |= Write
	}
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := val.List()
				for i := 0; i < l.Len(); i++ {
					f.walk(v, l.Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			f.walk(v, val.Message())
		}
		return !v.Refused()
	})
}

// deniedFunctions maps function names (lower case, unqualified) to the rule
// that refuses them.
var deniedFunctions = map[string]string{
	"set_config":                          "tenant-binding",
	"pg_terminate_backend":                "signal-backend",
	"pg_cancel_backend":                   "signal-backend",
	"pg_reload_conf":                      "signal-backend",
	"pg_rotate_logfile":                   "signal-backend",
	"pg_promote":                          "signal-backend",
	"pg_log_backend_memory_contexts":      "signal-backend",
	"pg_read_file":                        "server-files",
	"pg_read_binary_file":                 "server-files",
	"pg_ls_dir":                           "server-files",
	"pg_stat_file":                        "server-files",
	"pg_ls_logdir":                        "server-files",
	"pg_ls_waldir":                        "server-files",
	"pg_ls_tmpdir":                        "server-files",
	"pg_ls_archive_statusdir":             "server-files",
	"pg_file_write":                       "server-files",
	"pg_file_rename":                      "server-files",
	"pg_file_unlink":                      "server-files",
	"pg_current_logfile":                  "server-files",
	"pg_stat_get_activity":                "other-sessions",
	"pg_blocking_pids":                    "other-sessions",
	"pg_safe_snapshot_blocking_pids":      "other-sessions",
	"pg_stat_statements":                  "other-sessions",
	"pg_stat_statements_reset":            "other-sessions",
	"pg_stat_statements_info":             "other-sessions",
	"pg_lock_status":                      "other-sessions",
	"pg_prepared_xact":                    "other-sessions",
	"pg_listening_channels":               "listen-notify",
	"pg_logical_emit_message":             "replication",
	"pg_create_logical_replication_slot":  "replication",
	"pg_create_physical_replication_slot": "replication",
	"pg_drop_replication_slot":            "replication",
	"pg_logical_slot_get_changes":         "replication",
	"pg_logical_slot_peek_changes":        "replication",
	"pg_replication_origin_create":        "replication",
	// These run SQL given as a string, or read a relation (or a whole
	// schema or database) named by a string: the firewall sees neither,
	// so query_to_xml('SELECT pg_terminate_backend(…)', …) or
	// table_to_xml('pg_stat_activity', …) would pass every rule.
	"query_to_xml":                  "dynamic-sql",
	"query_to_xmlschema":            "dynamic-sql",
	"query_to_xml_and_xmlschema":    "dynamic-sql",
	"table_to_xml":                  "dynamic-sql",
	"table_to_xmlschema":            "dynamic-sql",
	"table_to_xml_and_xmlschema":    "dynamic-sql",
	"schema_to_xml":                 "dynamic-sql",
	"schema_to_xmlschema":           "dynamic-sql",
	"schema_to_xml_and_xmlschema":   "dynamic-sql",
	"database_to_xml":               "dynamic-sql",
	"database_to_xmlschema":         "dynamic-sql",
	"database_to_xml_and_xmlschema": "dynamic-sql",
	"ts_stat":                       "dynamic-sql",
}

// deniedFunctionPrefixes refuse families of functions.
var deniedFunctionPrefixes = []struct{ prefix, rule string }{
	{"lo_", "large-objects"},
	{"pg_stat_get_backend_", "other-sessions"},
	{"pg_stat_get_wal_", "other-sessions"},
	{"dblink", "dblink-fdw"},
	{"pg_read_", "server-files"},
	{"pg_ls_", "server-files"},
	{"pg_file_", "server-files"},
}

var ruleReasons = map[string]string{
	"tenant-binding": "set_config is not allowed: it could rewrite the tenant binding",
	"signal-backend": "signalling or reconfiguring server processes is not allowed",
	"server-files":   "reading or writing server files is not allowed",
	"other-sessions": "reading other sessions' activity, locks or statements is not allowed",
	"listen-notify":  "the channels a connection listens to are the proxy's, not the tenant's",
	"replication":    "replication functions are not allowed",
	"large-objects":  "large objects are not allowed: they are not covered by row-level security",
	"dblink-fdw":     "dblink and foreign data wrappers are not allowed",
	"dynamic-sql":    "it runs SQL, or reads relations, named in a string the firewall cannot check",
}

func (f *Firewall) funcCall(v *Verdict, fc *pg_query.FuncCall) {
	parts := make([]string, 0, len(fc.Funcname))
	for _, n := range fc.Funcname {
		if s := n.GetString_(); s != nil {
			parts = append(parts, strings.ToLower(s.Sval))
		}
	}
	if len(parts) == 0 {
		return
	}
	name := parts[len(parts)-1]
	if len(parts) > 1 && parts[len(parts)-2] == strings.ToLower(f.cfg.ProtectedSchema) && name != "current_tenant" {
		v.refuse("tenantguard-schema", "functions in schema %s are not callable by tenants", f.cfg.ProtectedSchema)
		return
	}
	if name == "ts_rewrite" && len(fc.Args) == 2 {
		// ts_rewrite(query, select): the second argument is SQL it runs.
		v.refuse("dynamic-sql", "%s() refused: %s", name, ruleReasons["dynamic-sql"])
		return
	}
	if name == "pg_notify" {
		v.Notify = true // its channel argument is namespaced (NamespaceNotify)
		return
	}
	if rule, ok := deniedFunctions[name]; ok {
		v.refuse(rule, "%s() refused: %s", name, ruleReasons[rule])
		return
	}
	for _, p := range deniedFunctionPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			v.refuse(p.rule, "%s() refused: %s", name, ruleReasons[p.rule])
			return
		}
	}
	if strings.Contains(name, "advisory_lock") || name == "pg_advisory_unlock_all" {
		v.SessionState = true
	}
}

// deniedRelations are catalog views that show other sessions.
var deniedRelations = map[string]string{
	"pg_stat_activity":        "other-sessions",
	"pg_locks":                "other-sessions",
	"pg_stat_statements":      "other-sessions",
	"pg_stat_statements_info": "other-sessions",
	"pg_prepared_xacts":       "other-sessions",
	"pg_stat_ssl":             "other-sessions",
	"pg_stat_gssapi":          "other-sessions",
	"pg_stat_replication":     "other-sessions",
	"pg_stat_wal_receiver":    "other-sessions",
	"pg_stat_subscription":    "other-sessions",
	"pg_largeobject":          "large-objects",
	"pg_largeobject_metadata": "large-objects",
	"pg_settings":             "tenant-binding", // UPDATE pg_settings is set_config
	"pg_file_settings":        "server-files",
	"pg_hba_file_rules":       "server-files",
	"pg_authid":               "roles-and-privileges",
	"pg_shadow":               "roles-and-privileges",
	"pg_user_mappings":        "dblink-fdw",
}

func (f *Firewall) relation(v *Verdict, rv *pg_query.RangeVar) {
	if strings.EqualFold(rv.Schemaname, f.cfg.ProtectedSchema) || strings.EqualFold(rv.Schemaname, CopySchema) {
		v.refuse("tenantguard-schema", "schema %s is not accessible to tenants", rv.Schemaname)
		return
	}
	name := strings.ToLower(rv.Relname)
	if rule, ok := deniedRelations[name]; ok {
		if rv.Schemaname == "" || strings.EqualFold(rv.Schemaname, "pg_catalog") || strings.EqualFold(rv.Schemaname, "public") {
			reason := ruleReasons[rule]
			if reason == "" {
				reason = "this catalog is not accessible to tenants"
			}
			v.refuse(rule, "%s refused: %s", name, reason)
			return
		}
	}
	if strings.HasPrefix(name, "pg_stat_progress_") {
		v.refuse("other-sessions", "%s refused: %s", name, ruleReasons["other-sessions"])
	}
}

func nodeName(n *pg_query.Node) string {
	if n == nil || n.Node == nil {
		return "empty"
	}
	return string(n.ProtoReflect().WhichOneof(n.ProtoReflect().Descriptor().Oneofs().Get(0)).Name())
}
