package token

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// maxToken returns a token with every field at its maximum length, and a
// verifier for it.
func maxToken(t *testing.T) (string, *Verifier) {
	kid, tenant, user := strings.Repeat("k", MaxKeyIDLen), "t"+strings.Repeat("x", MaxTenantIDLen-1), strings.Repeat("u", MaxUserIDLen)
	k := mustKey(t, kid)
	tok := mustSign(t, k, claimsFor(tenant, user))
	if len(tok) != MaxTokenLen {
		t.Fatalf("token of %d bytes, want %d", len(tok), MaxTokenLen)
	}
	return tok, mustVerifier(t, k)
}

// TestTokenFitsHTTPHeader sends a maximal token as a bearer token through
// net/http with the whole request head (request line and all headers)
// limited to 8 KiB, nginx's default large_client_header_buffers size.
func TestTokenFitsHTTPHeader(t *testing.T) {
	tok, v := maxToken(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := v.Verify(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), testNow)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, c.TenantID)
	}))
	// net/http reads MaxHeaderBytes plus 4096 bytes of slack: 4096 here
	// limits the request head to 8192 bytes.
	srv.Config.MaxHeaderBytes = 4096
	srv.Start()
	defer srv.Close()

	do := func(auth string) int {
		req, _ := http.NewRequest("GET", srv.URL+"/check", nil)
		req.Header.Set("Authorization", auth)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	line := "Authorization: Bearer " + tok + "\r\n"
	t.Logf("Authorization header line: %d bytes of 8192", len(line))
	if code := do("Bearer " + tok); code != http.StatusOK {
		t.Fatalf("maximal token: HTTP %d", code)
	}
	// The limit is real: a header of 8 KiB is refused.
	if code := do("Bearer " + strings.Repeat("A", 8192)); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("8 KiB header: HTTP %d, want 431", code)
	}
}

// TestTokenFitsPgxPassword connects with pgx to a fake PostgreSQL server
// that asks for a cleartext password and reads it with an 8 KiB message
// limit, like the tenantguard sidecar's pre-authentication limit. The token
// goes in the URL's userinfo unescaped.
func TestTokenFitsPgxPassword(t *testing.T) {
	tok, v := maxToken(t)
	if got := connectWithPassword(t, tok); got != tok {
		t.Fatalf("server received a %d-byte password, want the %d-byte token", len(got), len(tok))
	}
	if _, err := v.Verify(tok, testNow); err != nil {
		t.Fatal(err)
	}
	t.Logf("PasswordMessage body %d bytes (limit 8192)", len(tok)+1)
	// The limit is real: a 9000-byte password is refused.
	if got := connectWithPassword(t, strings.Repeat("p", 9000)); got != "" {
		t.Fatal("9000-byte password passed the 8 KiB limit")
	}
}

// connectWithPassword returns the password the fake server received, or ""
// if reading it failed.
func connectWithPassword(t *testing.T, password string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- ""
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		be := pgproto3.NewBackend(conn, conn)
		if _, err := be.ReceiveStartupMessage(); err != nil {
			got <- ""
			return
		}
		be.Send(&pgproto3.AuthenticationCleartextPassword{})
		if err := be.Flush(); err != nil {
			got <- ""
			return
		}
		_ = be.SetAuthType(pgproto3.AuthTypeCleartextPassword)
		be.SetMaxBodyLen(8 << 10)
		msg, err := be.Receive()
		pw, ok := msg.(*pgproto3.PasswordMessage)
		if err != nil || !ok {
			got <- ""
			be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "08P01", Message: "message too long"})
			_ = be.Flush()
			return
		}
		got <- pw.Password
		be.Send(&pgproto3.AuthenticationOk{})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		_ = be.Flush()
		_, _ = be.Receive() // Terminate
	}()

	cfg, err := pgconn.ParseConfig("postgres://alice:" + password + "@" + ln.Addr().String() + "/app?sslmode=disable&connect_timeout=10")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Password != password {
		t.Fatal("the password changed on its way through the connection URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		conn.Close(ctx)
	} else if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) {
		t.Logf("connect: %v", err)
	}
	return <-got
}
