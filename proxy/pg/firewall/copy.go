package firewall

import (
	"errors"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// COPY FROM STDIN into a row-isolated table.
//
// PostgreSQL refuses COPY FROM into a table with row-level security for a
// role subject to it (0A000). The proxy instead COPYs into the table's stage
// in CopySchema (same columns, no constraints, no RLS, writable and not
// readable by the upstream role; rows never outlive their transaction) and
// has an administrator-owned function move the rows into the table, where
// the table's defaults fill omitted columns and the isolation checks every
// row (see proxy/pg/rls). CopyTarget reads a COPY's target; RewriteCopy
// points it at the stage.

// CopySchema holds the stages of row-isolated tables, one per table, named
// "<schema>.<table>" (a single identifier): PostgreSQL's COPY errors then
// still read "COPY public.orders, line 3, column amount: …".
const CopySchema = "tenantguard_copy"

// CopyStatement is a COPY … FROM STDIN's target.
type CopyStatement struct {
	Schema, Table string   // as written: Schema "" when unqualified
	Columns       []string // nil: all of the table's, in order
}

// ErrNotCopyFrom is returned for a query that is not one COPY … FROM STDIN
// into a table.
var ErrNotCopyFrom = errors.New("not a single COPY … FROM STDIN into a table")

// CopyTarget returns the target of query, which must be a single COPY …
// FROM STDIN into a table.
func CopyTarget(query string) (CopyStatement, error) {
	tree, err := pg_query.Parse(query)
	if err != nil {
		return CopyStatement{}, err
	}
	c, err := singleCopy(tree)
	if err != nil {
		return CopyStatement{}, err
	}
	out := CopyStatement{Schema: c.Relation.Schemaname, Table: c.Relation.Relname}
	for _, a := range c.Attlist {
		if s := a.GetString_(); s != nil {
			out.Columns = append(out.Columns, s.Sval)
		}
	}
	return out, nil
}

// RewriteCopy points a COPY … FROM STDIN at stage (a table of CopySchema),
// keeping its columns and options.
func RewriteCopy(query, stage string) (string, error) {
	tree, err := pg_query.Parse(query)
	if err != nil {
		return "", err
	}
	c, err := singleCopy(tree)
	if err != nil {
		return "", err
	}
	c.Relation.Catalogname, c.Relation.Schemaname, c.Relation.Relname = "", CopySchema, stage
	return pg_query.Deparse(tree)
}

func singleCopy(tree *pg_query.ParseResult) (*pg_query.CopyStmt, error) {
	if len(tree.Stmts) != 1 {
		return nil, ErrNotCopyFrom
	}
	n, ok := tree.Stmts[0].GetStmt().GetNode().(*pg_query.Node_CopyStmt)
	if !ok || !n.CopyStmt.IsFrom || n.CopyStmt.Relation == nil || n.CopyStmt.Query != nil ||
		n.CopyStmt.Filename != "" || n.CopyStmt.IsProgram {
		return nil, ErrNotCopyFrom
	}
	return n.CopyStmt, nil
}
