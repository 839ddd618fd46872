package pg

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/policy"
)

func fuzzServer(t testing.TB) *Server {
	snap, err := policy.Compile(policy.Spec{Tenants: []policy.TenantSpec{{ID: "acme", Passwords: []string{"acme-secret-1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{
		Databases:      []Database{{Name: "app", URL: "postgres://u:p@127.0.0.1:1/app?sslmode=disable"}},
		StartupTimeout: 2 * time.Second,
	}, policy.NewStore(snap), prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv
}

// FuzzClientStartup feeds arbitrary bytes to the startup and SCRAM path: it
// must end (error or refusal) without panicking or hanging, and never
// authenticate.
func FuzzClientStartup(f *testing.F) {
	sm, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "acme", "database": "app"}}).Encode(nil)
	ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	init, _ := (&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abcdefghijklmnop")}).Encode(nil)
	resp, _ := (&pgproto3.SASLResponse{Data: []byte("c=biws,r=abcdefghijklmnop,p=AAAA")}).Encode(nil)
	opts, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "acme", "options": "-c x=y"}}).Encode(nil)
	f.Add(sm)
	f.Add(append(append(sm, init...), resp...))
	f.Add(append(ssl, sm...))
	f.Add(opts)
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2})
	srv := fuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		defer client.Close()
		go func() {
			_, _ = client.Write(data)
			_ = client.Close()
		}()
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, client)
			close(done)
		}()
		s, err := srv.startup(context.Background(), func() {}, server)
		_ = server.Close()
		<-done
		if s != nil || err == nil && len(data) > 0 && !isCancel(data) {
			t.Fatalf("startup accepted fuzzed input: session=%v err=%v", s != nil, err)
		}
	})
}

func isCancel(b []byte) bool {
	return len(b) >= 8 && binary.BigEndian.Uint32(b[4:8]) == 80877102
}

// FuzzRewrite runs arbitrary client messages through statement tracking:
// it must not panic, and every message it produces must be well framed.
func FuzzRewrite(f *testing.F) {
	msgs := func(ms ...pgproto3.FrontendMessage) []byte {
		var b []byte
		for _, m := range ms {
			b, _ = m.Encode(b)
		}
		return b
	}
	f.Add(msgs(&pgproto3.Parse{Name: "s1", Query: "SELECT $1"}, &pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Execute{}, &pgproto3.Sync{}))
	f.Add(msgs(&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Close{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{}))
	f.Add(msgs(&pgproto3.Bind{PreparedStatement: "_tg_x", DestinationPortal: "p"}, &pgproto3.Query{String: "SELECT 1"}))
	f.Add([]byte{'B', 0, 0, 0, 4, 'P', 0, 0, 0, 5, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		p := &pool{cfg: &Config{MaxPrepared: 3}}
		sc := &serverConn{pool: p, prepared: map[string]*preparedState{}, params: map[string]string{}}
		s := &clientConn{pool: p, stmts: map[string]*clientStmt{}}
		for len(data) >= 5 {
			n := int(binary.BigEndian.Uint32(data[1:5]))
			if n < 4 || n+1 > len(data) {
				return
			}
			raw := data[:n+1]
			data = data[n+1:]
			s.out = s.out[:0]
			out := s.rewrite(sc, raw[0], raw)
			for _, m := range [][]byte{s.out, out} {
				for len(m) > 0 {
					if len(m) < 5 || int(binary.BigEndian.Uint32(m[1:5]))+1 > len(m) {
						t.Fatalf("badly framed output %q", m)
					}
					m = m[binary.BigEndian.Uint32(m[1:5])+1:]
				}
			}
			if len(sc.prepared) > 4 {
				t.Fatalf("prepared cache grew past its bound: %d", len(sc.prepared))
			}
			if !bytes.Equal(out[:1], raw[:1]) {
				t.Fatalf("message type changed from %q to %q", raw[0], out[0])
			}
		}
	})
}
