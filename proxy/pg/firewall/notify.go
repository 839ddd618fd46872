package firewall

import (
	"errors"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// LISTEN and NOTIFY, namespaced.
//
// Tenants share one database, and PostgreSQL's notification channels are
// database-wide. The proxy therefore answers LISTEN and UNLISTEN itself
// (listening upstream, on a connection of its own, to the tenant's
// namespaced channel) and sends every NOTIFY and pg_notify() on the
// tenant's namespaced channel: prefix plus the channel the client named.
// A notification sent on a channel without the prefix (by an
// administrator's trigger function, say) reaches no tenant.

// ListenOp is one LISTEN or UNLISTEN of a query.
type ListenOp struct {
	Listen  bool   // LISTEN; false: UNLISTEN
	Channel string // "" with Listen false: UNLISTEN *
}

// ErrMixedListen is returned for a query that has LISTEN or UNLISTEN
// together with other statements: the proxy answers the former itself,
// so they must come alone.
var ErrMixedListen = errors.New("LISTEN and UNLISTEN must be sent on their own, not with other statements in one query")

// Channels returns the LISTEN and UNLISTEN statements of query, which must
// consist of nothing else.
func Channels(query string) ([]ListenOp, error) {
	tree, err := pg_query.Parse(query)
	if err != nil {
		return nil, err
	}
	var ops []ListenOp
	for _, raw := range tree.Stmts {
		switch s := raw.GetStmt().GetNode().(type) {
		case *pg_query.Node_ListenStmt:
			ops = append(ops, ListenOp{Listen: true, Channel: s.ListenStmt.Conditionname})
		case *pg_query.Node_UnlistenStmt:
			ops = append(ops, ListenOp{Channel: s.UnlistenStmt.Conditionname})
		default:
			return nil, ErrMixedListen
		}
	}
	return ops, nil
}

// NamespaceNotify rewrites query so that every NOTIFY and every call of
// pg_notify() sends on prefix plus the channel it names (for pg_notify,
// prefix || its channel argument, whatever expression that is).
func NamespaceNotify(query, prefix string) (string, error) {
	tree, err := pg_query.Parse(query)
	if err != nil {
		return "", err
	}
	changed := false
	for _, raw := range tree.Stmts {
		if n, ok := raw.GetStmt().GetNode().(*pg_query.Node_NotifyStmt); ok {
			n.NotifyStmt.Conditionname = prefix + n.NotifyStmt.Conditionname
			changed = true
			continue
		}
		walkFuncCalls(raw.GetStmt(), func(fc *pg_query.FuncCall) {
			if len(fc.Args) == 0 || !isPgNotify(fc) {
				return
			}
			fc.Args[0] = pg_query.MakeAExprNode(pg_query.A_Expr_Kind_AEXPR_OP,
				[]*pg_query.Node{pg_query.MakeStrNode("||")},
				pg_query.MakeAConstStrNode(prefix, -1), fc.Args[0], -1)
			changed = true
		})
	}
	if !changed {
		return query, nil
	}
	return pg_query.Deparse(tree)
}

func isPgNotify(fc *pg_query.FuncCall) bool {
	n := len(fc.Funcname)
	if n == 0 || n > 2 {
		return false
	}
	last := fc.Funcname[n-1].GetString_()
	if last == nil || !strings.EqualFold(last.Sval, "pg_notify") {
		return false
	}
	if n == 2 {
		schema := fc.Funcname[0].GetString_()
		return schema != nil && strings.EqualFold(schema.Sval, "pg_catalog")
	}
	return true
}

// walkFuncCalls calls f on every function call in the tree under n.
func walkFuncCalls(n *pg_query.Node, f func(*pg_query.FuncCall)) {
	if n == nil {
		return
	}
	walkMessage(n.ProtoReflect(), f)
}

func walkMessage(m protoreflect.Message, f func(*pg_query.FuncCall)) {
	if !m.IsValid() {
		return
	}
	if fc, ok := m.Interface().(*pg_query.FuncCall); ok {
		f(fc)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := val.List()
				for i := 0; i < l.Len(); i++ {
					walkMessage(l.Get(i).Message(), f)
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			walkMessage(val.Message(), f)
		}
		return true
	})
}
