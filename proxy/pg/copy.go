package pg

import (
	"strings"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// COPY FROM STDIN into row-isolated tables, which PostgreSQL refuses under
// row-level security: the proxy sends, as one simple Query (so one
// implicit transaction, or inside the client's own), the client's COPY
// pointed at the table's stage and the move of the staged rows into the
// table (rls.CopyFinish), where the table's defaults and isolation apply
// to every row. The client sees PostgreSQL's own COPY protocol, row count
// and errors (line numbers included: the stage is named after the table);
// a row naming another tenant fails the whole COPY with the RLS error, as
// a direct INSERT would. Text, CSV and binary formats all work, since
// PostgreSQL itself parses the data. COPY into other tables passes
// through untouched.

// copyFrom handles a COPY … FROM STDIN the firewall let through.
func (s *clientConn) copyFrom(typ byte, raw []byte) ([]byte, bool, error) {
	body := raw[wire.HeaderLen:]
	if typ == wire.MsgParse {
		_, body, _ = wire.CString(body)
	}
	text, _, _ := wire.CString(body)
	c, err := firewall.CopyTarget(string(text))
	if err != nil {
		return raw, false, nil // not a plain COPY into a table: PostgreSQL decides
	}
	table, ambiguous := isolatedTable(s.snap, c)
	switch {
	case ambiguous != "":
		return raw, true, s.refuseStatement(typ, refusal("copy", "COPY into "+c.Table+" is ambiguous: "+ambiguous+"; qualify the table with its schema"))
	case table == "":
		return raw, false, nil
	case typ != wire.MsgQuery:
		return raw, true, s.refuseStatement(typ, refusal("copy", "COPY FROM STDIN into a row-isolated table works with the simple query protocol (as psql, pgx, psycopg and JDBC send it), not in a Parse"))
	}
	staged, err := firewall.RewriteCopy(string(text), table)
	if err != nil {
		return raw, true, s.refuseStatement(typ, wire.Errorf(wire.CodeSyntaxError, "%v", err))
	}
	cols := "NULL"
	if c.Columns != nil {
		quoted := make([]string, len(c.Columns))
		for i, col := range c.Columns {
			quoted[i] = sqlLiteral(col)
		}
		cols = "ARRAY[" + strings.Join(quoted, ", ") + "]"
	}
	sql := staged + "; SELECT " + rls.CopyFinish + "(" + sqlLiteral(table) + ", " + cols + "::text[])"
	s.copyLoad = true
	s.msg = wire.AppendQuery(s.msg[:0], sql)
	return s.msg, false, nil
}

// isolatedTable finds the row-isolated table a COPY targets: by its
// qualified name, or an unqualified name that only one such table has. It
// returns "" when the target is not row-isolated (or shared, which the
// permissions refuse anyway), and a reason when the name is ambiguous.
func isolatedTable(snap *policy.Snapshot, c firewall.CopyStatement) (table, ambiguous string) {
	var matches []string
	for _, t := range snap.Tables() {
		if t.Shared {
			continue
		}
		schema, name, _ := strings.Cut(t.Name, ".")
		if name == c.Table && (c.Schema == "" || c.Schema == schema) {
			matches = append(matches, t.Name)
		}
	}
	switch len(matches) {
	case 0:
		return "", ""
	case 1:
		return matches[0], ""
	}
	return "", "several row-isolated tables are named so (" + strings.Join(matches, ", ") + ")"
}

// sqlLiteral quotes s as a string constant (standard_conforming_strings is
// pinned on upstream).
func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
