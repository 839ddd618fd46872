package pg_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
	"github.com/tenantguard/tenantguard/test/sessionfake"
)

// maxTokenLen is the longest session token extauthz/token issues.
const maxTokenLen = 5062

// startTokenProxy starts a listener that accepts fs's tokens, with TLS.
func startTokenProxy(t *testing.T, pg *pgcluster.Cluster, fs *sessionfake.Sessions, tweak func(*proxypg.Config)) *proxy {
	t.Helper()
	_, certFile, keyFile := harness.SelfSignedCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return startProxy(t, pg, func(c *proxypg.Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		c.Sessions = fs
		if tweak != nil {
			tweak(c)
		}
	})
}

// TestTokenLogin: a session token works as the password over TLS and over
// loopback; a token never authenticates another tenant; every failure is
// the same 28P01, told apart only in metrics; static secrets keep working.
func TestTokenLogin(t *testing.T) {
	pg := upstream(t)
	fs := sessionfake.New()
	p := startTokenProxy(t, pg, fs, nil)
	ctx := ctxT(t, 30*time.Second)

	acme := fs.Issue("acme", nil)
	for _, tc := range []struct {
		name, user, password string
		tls                  bool
		reason               string // auth failure reason; "" = logs in
	}{
		{"token over TLS", "acme", acme, true, ""},
		{"token over loopback", "acme", acme, false, ""},
		{"maximal token", "globex", fs.IssueLen("globex", maxTokenLen), true, ""},
		{"static secret over cleartext", "acme", acmeSecret, false, ""},
		{"static secret over TLS", "globex", globexSecret, true, ""},
		{"token of another tenant", "globex", acme, true, "token_invalid"},
		{"token for an unknown tenant", "initech", fs.Issue("initech", nil), true, "token_invalid"},
		{"unknown token", "acme", "tg1.not-issued", true, "token_invalid"},
		{"revoked", "acme", fs.Issue("acme", policy.ErrSessionRevoked), true, "token_revoked"},
		{"expired", "acme", fs.Issue("acme", policy.ErrSessionExpired), false, "token_expired"},
		{"malformed", "acme", fs.Issue("acme", policy.ErrSessionInvalid), true, "token_invalid"},
		{"store unavailable", "acme", fs.Issue("acme", policy.ErrSessionUnavailable), true, "store_unavailable"},
		{"wrong static secret", "acme", "not-the-secret", false, "password"},
		{"other tenant's static secret", "acme", globexSecret, true, "password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mode := "disable"
			if tc.tls {
				mode = "require"
			}
			before := p.metric(t, "tenantguard_pg_auth_failures_total", map[string]string{"reason": tc.reason})
			opened := fs.Opened(tc.password)
			c, err := pgx.Connect(ctx, p.url(tc.user, tc.password, "sslmode", mode))
			if tc.reason != "" {
				if err == nil {
					c.Close(ctx)
					t.Fatal("authenticated")
				}
				pe := assertSQLState(t, err, "28P01")
				if want := fmt.Sprintf("password authentication failed for user %q", tc.user); pe.Message != want {
					t.Fatalf("message %q, want %q", pe.Message, want)
				}
				if got := p.metric(t, "tenantguard_pg_auth_failures_total", map[string]string{"reason": tc.reason}); got != before+1 {
					t.Fatalf("auth_failures_total{reason=%s} = %v, want %v", tc.reason, got, before+1)
				}
				if fs.Opened(tc.password) > opened {
					// Opened for a tenant the policy lacks: closed again.
					fs.Lease(t, tc.password, opened).WaitClosed(t)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, isTLS := c.PgConn().Conn().(*tls.Conn); isTLS != tc.tls {
				t.Fatalf("TLS %v, want %v", isTLS, tc.tls)
			}
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM items WHERE tenant = 'acme'").Scan(&n); err != nil || n < 100 {
				t.Fatalf("query: %d %v", n, err)
			}
			if got := c.PgConn().ParameterStatus("session_authorization"); got != tc.user {
				t.Fatalf("session_authorization %q", got)
			}
			if !strings.HasPrefix(tc.password, "tg1.") {
				c.Close(ctx)
				return
			}
			l := fs.Lease(t, tc.password, opened)
			c.Close(ctx)
			l.WaitClosed(t)
		})
	}
}

// remoteListener makes every client look as if it came from another host.
type remoteListener struct{ net.Listener }

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c}, nil
}

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 40000}
}

// TestTokenAuthMethod: which connections are asked for a cleartext
// password. Plaintext from another host keeps SCRAM, so a token cannot be
// presented there but a static secret still works.
func TestTokenAuthMethod(t *testing.T) {
	pg := upstream(t)
	fs := sessionfake.New()
	ctx := ctxT(t, 30*time.Second)
	serveRemote := func(t *testing.T, p *proxy) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.srv.Serve(remoteListener{ln}) }()
		t.Cleanup(func() {
			_ = ln.Close()
			<-done
		})
		return ln.Addr().String()
	}
	for _, tc := range []struct {
		name      string
		sessions  bool
		mode      proxypg.TokenAuth
		remote    bool
		tls       bool
		cleartext bool
	}{
		{"no sessions: SCRAM on loopback", false, "", false, false, false},
		{"loopback plaintext", true, "", false, false, true},
		{"remote plaintext", true, "", true, false, false},
		{"remote TLS", true, "", true, true, true},
		{"tls mode, loopback plaintext", true, proxypg.TokenAuthTLS, false, false, false},
		{"tls mode, loopback TLS", true, proxypg.TokenAuthTLS, false, true, true},
		{"off, TLS", true, proxypg.TokenAuthOff, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p *proxy
			if tc.sessions {
				p = startTokenProxy(t, pg, fs, func(c *proxypg.Config) { c.TokenAuth = tc.mode })
			} else {
				p = startProxy(t, pg, nil)
			}
			addr := p.addr
			if tc.remote {
				addr = serveRemote(t, p)
			}
			if got := firstAuthRequest(t, ctx, addr, tc.tls); got != tc.cleartext {
				t.Fatalf("asked for cleartext: %v, want %v", got, tc.cleartext)
			}
			mode := "disable"
			if tc.tls {
				mode = "require"
			}
			url := strings.Replace(p.url("acme", acmeSecret, "sslmode", mode), p.addr, addr, 1)
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatalf("static secret: %v", err)
			}
			c.Close(ctx)
			if !tc.sessions {
				return
			}
			tok := fs.Issue("acme", nil)
			c, err = pgx.Connect(ctx, strings.Replace(p.url("acme", tok, "sslmode", mode), p.addr, addr, 1))
			if !tc.cleartext {
				if err == nil {
					c.Close(ctx)
					t.Fatal("token accepted through SCRAM")
				}
				assertSQLState(t, err, "28P01")
				return
			}
			if err != nil {
				t.Fatalf("token: %v", err)
			}
			c.Close(ctx)
		})
	}
}

// firstAuthRequest starts up as acme and reports whether the proxy asks
// for a cleartext password (else it must be asking for SASL).
func firstAuthRequest(t *testing.T, ctx context.Context, addr string, useTLS bool) bool {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if useTLS {
		ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
		var b [1]byte
		if _, err := conn.Write(ssl); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(b[:]); err != nil || b[0] != 'S' {
			t.Fatalf("SSLRequest: %q %v", b[0], err)
		}
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		if err := tc.HandshakeContext(ctx); err != nil {
			t.Fatal(err)
		}
		conn = tc
	}
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "acme", "database": "app"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	switch m := msg.(type) {
	case *pgproto3.AuthenticationCleartextPassword:
		return true
	case *pgproto3.AuthenticationSASL:
		return false
	default:
		t.Fatalf("first reply %T", m)
	}
	return false
}
