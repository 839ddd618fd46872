package pg

import (
	"context"
	"crypto/hmac"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	wire "github.com/tenantguard/tenantguard/wire/pg"
	"github.com/tenantguard/tenantguard/wire/scram"
)

// The admin console, as PgBouncer's: an operator connects to the database
// named ConsoleDatabase with the console credential (psql -d tenantguard)
// and runs SHOW POOLS, CLIENTS, SERVERS, STATS, TENANTS, CACHE, CONFIG, VERSION,
// RELOAD, PAUSE and RESUME, with PgBouncer's column names where the
// concept is the same. It speaks the simple query protocol only, touches no
// upstream connection, and is never a tenant: tenant names cannot log in
// here, and the console user cannot reach a tenant database.

// ConsoleDatabase is the database name of the admin console.
const ConsoleDatabase = "tenantguard"

// Console configures the admin console. Nil (or no user) turns it off:
// ConsoleDatabase is then a database that does not exist.
type Console struct {
	User     string
	Verifier scram.Verifier
	// Version is what SHOW VERSION reports.
	Version string
	// Reload, if set, is RELOAD: it re-reads the sidecar's configuration
	// and applies what can change while serving.
	Reload func() error
}

// consoleFor reports whether a login is for the admin console.
func (srv *Server) consoleFor(dbName string) bool {
	return dbName == ConsoleDatabase && srv.cfg.Console != nil && srv.cfg.Console.User != ""
}

// runConsole authenticates the console user and serves its commands until
// it leaves. It owns the connection from the end of the startup packet.
func (h *handshake) runConsole(ctx context.Context) error {
	srv, c := h.srv, h.srv.cfg.Console
	rd := wire.NewReader(h.br, preAuthMaxBody)
	v := scram.MockVerifier(h.user, srv.mockSecret[:])
	known := hmac.Equal([]byte(h.user), []byte(c.User))
	if known {
		v = c.Verifier
	}
	if err := scramExchange(rd, h.bw, v, known, h.user); err != nil {
		if e, ok := err.(*wire.Error); ok {
			srv.log.Warn("admin console login failed", "user", h.user, "remote", h.conn.RemoteAddr().String())
			return h.refuse(reasonOf(e.Code), e)
		}
		return err
	}
	b, _ := (&pgproto3.AuthenticationOk{}).Encode(nil)
	for _, kv := range [][2]string{{"server_version", "15.0 (tenantguard " + c.Version + ")"}, {"client_encoding", "UTF8"},
		{"server_encoding", "UTF8"}, {"standard_conforming_strings", "on"}, {"DateStyle", "ISO, MDY"}, {"integer_datetimes", "on"}} {
		b, _ = (&pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]}).Encode(b)
	}
	b, _ = (&pgproto3.BackendKeyData{ProcessID: 0, SecretKey: []byte{0, 0, 0, 0}}).Encode(b)
	b = wire.AppendReadyForQuery(b, wire.TxIdle)
	if _, err := h.bw.Write(b); err != nil {
		return err
	}
	if err := h.bw.Flush(); err != nil {
		return err
	}
	_ = h.conn.SetDeadline(time.Time{})
	srv.log.Info("admin console session", "user", h.user, "remote", h.conn.RemoteAddr().String())
	rd.SetMaxBody(64 << 10)
	for {
		typ, raw, err := rd.Next()
		if err != nil {
			return err
		}
		var out []byte
		switch typ {
		case wire.MsgTerminate:
			return nil
		case wire.MsgQuery:
			text, _, _ := wire.CString(raw[wire.HeaderLen:])
			out = srv.consoleCommand(ctx, string(text), nil)
		case wire.MsgSync:
			out = wire.AppendReadyForQuery(nil, wire.TxIdle)
		default:
			out = wire.Errorf(wire.CodeFeatureNotSupported, "the tenantguard console speaks the simple query protocol only").AppendTo(nil)
			if typ != wire.MsgFlush {
				out = wire.AppendReadyForQuery(out, wire.TxIdle)
			}
		}
		if _, err := h.bw.Write(out); err != nil {
			return err
		}
		if rd.Buffered() == 0 {
			if err := h.bw.Flush(); err != nil {
				return err
			}
		}
	}
}

// consoleCommand runs one console command and returns its whole reply,
// ReadyForQuery included.
func (srv *Server) consoleCommand(ctx context.Context, text string, dst []byte) []byte {
	words := strings.Fields(strings.TrimRight(strings.TrimSpace(text), "; \t\n"))
	for i := range words {
		words[i] = strings.ToUpper(words[i])
	}
	fail := func(format string, args ...any) []byte {
		dst = wire.Errorf(wire.CodeSyntaxError, format, args...).AppendTo(dst)
		return wire.AppendReadyForQuery(dst, wire.TxIdle)
	}
	if len(words) == 0 {
		dst = append(dst, wire.MsgEmptyQueryResponse, 0, 0, 0, 4)
		return wire.AppendReadyForQuery(dst, wire.TxIdle)
	}
	var res *resultSet
	tag := words[0]
	switch words[0] {
	case "SHOW":
		if len(words) != 2 {
			return fail("SHOW what? (POOLS, CLIENTS, SERVERS, STATS, TENANTS, CACHE, CONFIG, VERSION)")
		}
		switch words[1] {
		case "POOLS":
			res = srv.showPools()
		case "CLIENTS":
			res = srv.showClients()
		case "SERVERS":
			res = srv.showServers()
		case "STATS":
			res = srv.showStats()
		case "TENANTS":
			res = srv.showTenants()
		case "CACHE":
			res = srv.showCache()
		case "CONFIG":
			res = srv.showConfig()
		case "VERSION":
			res = &resultSet{cols: []string{"version"}, rows: [][]string{{"tenantguard " + srv.cfg.Console.Version}}}
		default:
			return fail("SHOW %s is not a console command (POOLS, CLIENTS, SERVERS, STATS, TENANTS, CACHE, CONFIG, VERSION)", words[1])
		}
	case "RELOAD":
		if srv.cfg.Console.Reload == nil {
			return fail("RELOAD: nothing to reload")
		}
		if err := srv.cfg.Console.Reload(); err != nil {
			dst = wire.Errorf(wire.CodeInvalidParameterValue, "RELOAD: %v", err).AppendTo(dst)
			return wire.AppendReadyForQuery(dst, wire.TxIdle)
		}
	case "PAUSE", "RESUME":
		if len(words) != 2 {
			return fail("%s needs a tenant: %s <tenant>", words[0], words[0])
		}
		tenant := strings.ToLower(words[1])
		if _, ok := srv.policy.Load().Tenant(tenant); !ok {
			return fail("%s: no tenant %q in the policy", words[0], tenant)
		}
		if words[0] == "RESUME" {
			srv.resume(tenant)
			break
		}
		if err := srv.pause(ctx, tenant, 30*time.Second); err != nil {
			n := (&pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING", Code: "01000",
				Message: fmt.Sprintf("tenant %s is paused, but %v", tenant, err)})
			dst, _ = n.Encode(dst)
		}
	default:
		return fail("%q is not a console command (SHOW, RELOAD, PAUSE, RESUME)", words[0])
	}
	if res != nil {
		dst = res.appendTo(dst)
		tag = "SHOW"
	}
	dst, _ = (&pgproto3.CommandComplete{CommandTag: []byte(tag)}).Encode(dst)
	return wire.AppendReadyForQuery(dst, wire.TxIdle)
}

// resultSet is a console reply: text columns and rows.
type resultSet struct {
	cols []string
	rows [][]string
}

func (r *resultSet) appendTo(dst []byte) []byte {
	rd := &pgproto3.RowDescription{}
	for _, c := range r.cols {
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(c), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
	}
	dst, _ = rd.Encode(dst)
	for _, row := range r.rows {
		dr := &pgproto3.DataRow{}
		for _, v := range row {
			dr.Values = append(dr.Values, []byte(v))
		}
		dst, _ = dr.Encode(dst)
	}
	return dst
}

func itoa(n int) string  { return strconv.Itoa(n) }
func i64(n int64) string { return strconv.FormatInt(n, 10) }
func ftime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 MST")
}
