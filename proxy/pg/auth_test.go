package pg_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/policy"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestAuthentication covers SCRAM with right and wrong secrets, unknown
// users, and one tenant's secret presented for another tenant.
func TestAuthentication(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, nil)
	ctx := ctxT(t, 20*time.Second)
	for _, tc := range []struct {
		name, user, password string
		code                 string
	}{
		{"right secret", "acme", acmeSecret, ""},
		{"wrong secret", "acme", "not-the-secret", "28P01"},
		{"other tenant's secret", "acme", globexSecret, "28P01"},
		{"unknown tenant", "initech", acmeSecret, "28P01"},
		{"empty password", "globex", "", "28P01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := pgx.Connect(ctx, p.url(tc.user, tc.password))
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(ctx)
				var who string
				if err := c.QueryRow(ctx, "SELECT current_setting('session_authorization')").Scan(&who); err != nil {
					t.Fatal(err)
				}
				if got := c.PgConn().ParameterStatus("session_authorization"); got != tc.user {
					t.Fatalf("session_authorization reported %q", got)
				}
				return
			}
			if err == nil {
				c.Close(ctx)
				t.Fatal("authenticated with a wrong credential")
			}
			pe := assertSQLState(t, err, tc.code)
			if !strings.Contains(pe.Message, "password authentication failed") {
				t.Fatalf("message %q", pe.Message)
			}
		})
	}
	if got := p.metric(t, "tenantguard_pg_auth_failures_total", map[string]string{"reason": "password"}); got != 4 {
		t.Fatalf("auth_failures_total{password} = %v, want 4", got)
	}
}

// TestTLS: sslmode=require gets TLS when a certificate is configured, and
// bytes pipelined before the handshake are refused.
func TestTLS(t *testing.T) {
	pg := upstream(t)
	_, certFile, keyFile := harness.SelfSignedCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, pg, func(c *proxypgConfig) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	ctx := ctxT(t, 20*time.Second)
	c, err := pgx.Connect(ctx, p.acmeURL("sslmode", "require"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
		t.Fatalf("connection is %T, not TLS", c.PgConn().Conn())
	}
	// verify-full against the test CA.
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg, err := pgx.ParseConfig(p.acmeURL("sslmode", "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig.RootCAs = pool
	cfg.TLSConfig.ServerName = "127.0.0.1"
	c2, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("verify-full: %v", err)
	}
	c2.Close(ctx)

	// An SSLRequest followed at once by a startup packet: the proxy must not
	// treat plaintext bytes as if they came over TLS.
	raw, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	start, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "acme"}}).Encode(nil)
	if _, err := raw.Write(append(ssl, start...)); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(raw)
	if len(b) != 0 || err != nil {
		t.Fatalf("want the connection closed without an answer, got %q %v", b, err)
	}
}

// TestStartupRefusals: options, replication, unknown parameters, unknown
// databases and non-UTF8 encodings are refused before anything reaches the
// server.
func TestStartupRefusals(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, nil)
	ctx := ctxT(t, 20*time.Second)
	for _, tc := range []struct {
		name   string
		params map[string]string
		code   string
		text   string
	}{
		{"options role", map[string]string{"options": "-c role=postgres"}, "42501", `startup option "role" is not allowed`},
		{"options session_authorization", map[string]string{"options": "-csession_authorization=postgres"}, "42501", `"session_authorization" is not allowed`},
		{"options switch", map[string]string{"options": "-d 5"}, "42501", `command-line switch "-d"`},
		{"options binding", map[string]string{"options": "--tenantguard.binding=globex"}, "42501", `"tenantguard.binding" is not allowed`},
		{"bad statement_timeout", map[string]string{"statement_timeout": "soon"}, "22023", "statement_timeout"},
		{"bad option value", map[string]string{"options": "-c default_transaction_isolation=sloppy"}, "22023", "default_transaction_isolation"},
		{"role", map[string]string{"role": "postgres"}, "42501", `"role" is not allowed`},
		{"session_authorization", map[string]string{"session_authorization": "postgres"}, "42501", "is not allowed"},
		{"replication", map[string]string{"replication": "database"}, "0A000", "replication"},
		{"bad DateStyle", map[string]string{"datestyle": "ISO, Martian"}, "22023", "DateStyle"},
		{"bad TimeZone", map[string]string{"TimeZone": "Mars/Olympus"}, "22023", "TimeZone"},
		{"latin1", map[string]string{"client_encoding": "LATIN1"}, "22023", "UTF8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := map[string]string{"user": "acme", "database": "app"}
			for k, v := range tc.params {
				params[k] = v
			}
			e := rawStartup(t, ctx, p.addr, params, acmeSecret)
			if e == nil || e.Code != tc.code || !strings.Contains(e.Message, tc.text) {
				t.Fatalf("got %+v, want %s %q", e, tc.code, tc.text)
			}
			if e.Severity != "FATAL" {
				t.Fatalf("severity %s", e.Severity)
			}
		})
	}
	// A database that does not exist is reported after authentication, as PostgreSQL does.
	_, err := pgx.Connect(ctx, strings.Replace(p.acmeURL(), "/app?", "/postgres?", 1))
	pe := assertSQLState(t, err, "3D000")
	if !strings.Contains(pe.Message, `database "postgres" does not exist`) {
		t.Fatalf("message %q", pe.Message)
	}
	// Allowed parameters pass and take effect.
	cfg, err := pgx.ParseConfig(p.acmeURL("application_name", "ok", "extra_float_digits", "2"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["datestyle"] = "ISO, DMY"
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var ds, efd string
	if err := c.QueryRow(ctx, "SELECT current_setting('DateStyle'), current_setting('extra_float_digits')").Scan(&ds, &efd); err != nil {
		t.Fatal(err)
	}
	if ds != "ISO, DMY" || efd != "2" {
		t.Fatalf("DateStyle %q extra_float_digits %q", ds, efd)
	}
}

// TestStartupOptions: settings a client gives at startup, as parameters
// (node-postgres' statement_timeout) or in options (libpq's PGOPTIONS,
// JDBC's options), apply to every transaction, on whichever server
// connection serves it; a tenant's statement_timeout limit caps them, and
// the client sees the value it runs with.
func TestStartupOptions(t *testing.T) {
	pg := upstream(t)
	spec := policy.Spec{Tenants: []policy.TenantSpec{
		{ID: "acme", Passwords: []string{acmeSecret}, Limits: policy.Limits{StatementTimeout: 30 * time.Second}},
		{ID: "globex", Passwords: []string{globexSecret}},
	}}
	p := startProxyWith(t, pg, spec, func(c *proxypgConfig) { c.PoolSize = 2 })
	ctx := ctxT(t, 30*time.Second)
	show := func(c *pgx.Conn, names ...string) []string {
		t.Helper()
		var out []string
		for _, n := range names {
			var v string
			if err := c.QueryRow(ctx, "SELECT current_setting($1)", n).Scan(&v); err != nil {
				t.Fatalf("SHOW %s: %v", n, err)
			}
			out = append(out, v)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		tenant string
		params []string
		want   map[string]string
	}{
		{"node-postgres style", "globex", []string{"statement_timeout", "5000", "lock_timeout", "2s", "idle_in_transaction_session_timeout", "1min"},
			map[string]string{"statement_timeout": "5s", "lock_timeout": "2s", "idle_in_transaction_session_timeout": "1min"}},
		{"PGOPTIONS", "globex", []string{"options", `-c search_path=pg_catalog,public -c default_transaction_isolation=repeatable\ read --bytea-output=escape`},
			map[string]string{"search_path": "pg_catalog,public", "default_transaction_isolation": "repeatable read", "bytea_output": "escape"}},
		{"capped by the tenant", "acme", []string{"statement_timeout", "60s"}, map[string]string{"statement_timeout": "30s"}},
		{"zero capped too", "acme", []string{"options", "-c statement_timeout=0"}, map[string]string{"statement_timeout": "30s"}},
		{"under the cap", "acme", []string{"statement_timeout", "10s"}, map[string]string{"statement_timeout": "10s"}},
		{"tenant limit alone", "acme", nil, map[string]string{"statement_timeout": "30s"}},
		{"nothing asked", "globex", nil, map[string]string{"statement_timeout": "0", "search_path": `"$user", public`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := globexSecret
			if tc.tenant == "acme" {
				secret = acmeSecret
			}
			c := p.connect(t, p.url(tc.tenant, secret, tc.params...))
			// Several transactions, so they land on both server connections.
			other := p.connect(t, p.url(tc.tenant, secret))
			for round := 0; round < 4; round++ {
				for name, want := range tc.want {
					if got := show(c, name)[0]; got != want {
						t.Fatalf("round %d: %s = %q, want %q", round, name, got, want)
					}
				}
				_ = show(other, "statement_timeout")
			}
		})
	}
}

// rawStartup sends a StartupMessage and, if asked for SCRAM, completes it;
// it returns the ErrorResponse the proxy ends with, or nil on success.
func rawStartup(t *testing.T, ctx context.Context, addr string, params map[string]string, password string) *pgproto3.ErrorResponse {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			cp := *m
			return &cp
		case *pgproto3.ReadyForQuery:
			return nil
		case *pgproto3.AuthenticationSASL:
			t.Fatal("authentication reached before refusal")
		}
	}
}

// TestProtocolRefusals: FunctionCall is refused with the session intact; a
// newer protocol minor version is negotiated down; oversized and malformed
// messages end the session cleanly.
func TestProtocolRefusals(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.MaxMessageBytes = 64 << 10 })
	ctx := ctxT(t, 20*time.Second)
	c := p.connect(t, p.acmeURL())
	pc := c.PgConn()
	_, err := pc.Exec(ctx, "SELECT 1").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	// FunctionCall via the hijacked frontend.
	fe := pc.Frontend()
	fe.Send(&pgproto3.FunctionCall{Function: 1598}) // random()
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var gotErr *pgproto3.ErrorResponse
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			cp := *e
			gotErr = &cp
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if gotErr == nil || gotErr.Code != "0A000" {
		t.Fatalf("FunctionCall: %+v", gotErr)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("after FunctionCall: %v", err)
	}

	// A message over the limit: an error and a closed connection.
	big := p.connect(t, p.acmeURL())
	_, err = big.Exec(ctx, "SELECT '"+strings.Repeat("x", 100<<10)+"'", pgx.QueryExecModeSimpleProtocol)
	if err == nil {
		t.Fatal("oversized message accepted")
	}
	if !big.IsClosed() {
		if err := big.Ping(ctx); err == nil {
			t.Fatal("connection survived an oversized message")
		}
	}

	// Protocol 3.2 is negotiated down to 3.0 with NegotiateProtocolVersion.
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	body := binary.BigEndian.AppendUint32(nil, 3<<16|2)
	for _, kv := range []string{"user", "acme", "database", "app", "_pq_.future", "x"} {
		body = append(append(body, kv...), 0)
	}
	body = append(body, 0)
	pkt := binary.BigEndian.AppendUint32(nil, uint32(4+len(body)))
	if _, err := conn.Write(append(pkt, body...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	typ, err := br.ReadByte()
	if err != nil || typ != 'v' {
		t.Fatalf("want NegotiateProtocolVersion, got %q %v", typ, err)
	}

	// Garbage instead of a startup packet: closed, no crash.
	g, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	_, _ = g.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = g.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(g); err != nil && !errors.Is(err, io.EOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("garbage startup: connection left hanging")
		}
	}
	// And the listener still serves.
	if err := c.QueryRow(ctx, "SELECT 4").Scan(&n); err != nil || n != 4 {
		t.Fatalf("after garbage: %v", err)
	}
}
