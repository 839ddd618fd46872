package authz_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tenantguard/tenantguard/extauthz/authz"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// leakCheck fails the test if it leaves goroutines behind; call it first,
// so its cleanup runs last.
func leakCheck(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore,
			goleak.IgnoreAnyFunction("github.com/tenantguard/tenantguard/internal/fixture/childproc.(*Process).wait"))
	})
}

// fixture is a real session store on redis-server, a verifier, and the
// ext_authz gRPC server on a loopback port, with a client built from
// go-control-plane's types, as Envoy's is.
type fixture struct {
	rdb    *goredis.Client
	store  *session.Store
	ver    *session.Verifier
	tv     *token.Verifier
	key    *token.SigningKey
	srv    *authz.Server
	client authv3.AuthorizationClient
}

func newFixture(t *testing.T, cfg session.Config, opts authz.Options) *fixture {
	t.Helper()
	rs := harness.Redis(t)
	leakCheck(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: rs.Addr(), DB: 2, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return newFixtureOn(t, rdb, cfg, opts)
}

func newFixtureOn(t *testing.T, rdb *goredis.Client, cfg session.Config, opts authz.Options) *fixture {
	t.Helper()
	key, err := token.GenerateKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	tv, err := token.NewVerifier(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "tg:test:" + strings.ReplaceAll(t.Name(), "/", ":") + ":"
		cfg.Channel = cfg.KeyPrefix + "revoked"
	}
	ver, err := session.NewVerifier(rdb, tv, cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ver.Close() })
	f := &fixture{rdb: rdb, store: session.NewStore(rdb, key, cfg), ver: ver, tv: tv, key: key}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(authz.ServerOptions()...)
	f.srv = authz.New(ver, opts, nil, nil)
	f.srv.Register(gs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	f.client = authv3.NewAuthorizationClient(cc)
	return f
}

func (f *fixture) create(t *testing.T, tenant, user string) (session.Session, string) {
	t.Helper()
	s, tok, err := f.store.Create(context.Background(), tenant, user)
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

// envoyRequest is the CheckRequest Envoy's ext_authz HTTP filter sends for
// GET /orders?page=2 with the given extra headers.
func envoyRequest(headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "app.example.com", ":method": "GET", ":path": "/orders?page=2", ":scheme": "https",
		"user-agent": "curl/8.5.0", "accept": "*/*", "x-forwarded-proto": "https",
		"x-request-id": "3c9f2a8e-7c1b-4d5e-9f1a-2b3c4d5e6f70",
	}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51544}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.9", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1234567890", Method: "GET", Headers: h, Path: "/orders?page=2", Host: "app.example.com",
			Scheme: "https", Protocol: "HTTP/1.1",
		}},
	}}
}

func (f *fixture) check(t *testing.T, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := f.client.Check(ctx, envoyRequest(headers))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func bearer(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }

func okHeaders(t *testing.T, resp *authv3.CheckResponse) map[string]string {
	t.Helper()
	if resp.GetStatus().GetCode() != int32(codes.OK) {
		t.Fatalf("status %v, want OK; denied body %q", resp.GetStatus(), resp.GetDeniedResponse().GetBody())
	}
	out := map[string]string{}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s: append action %v; identity headers must overwrite what the client sent", h.GetHeader().GetKey(), h.GetAppendAction())
		}
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

// denialCode asserts a 401 with a Bearer challenge and a JSON body, and
// returns the body's code.
func denialCode(t *testing.T, resp *authv3.CheckResponse) string {
	t.Helper()
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		t.Fatalf("allowed, want denied: %v", resp)
	}
	d := resp.GetDeniedResponse()
	if d.GetStatus().GetCode() != typev3.StatusCode_Unauthorized {
		t.Fatalf("HTTP status %v, want 401", d.GetStatus().GetCode())
	}
	var challenge string
	for _, h := range d.GetHeaders() {
		if h.GetHeader().GetKey() == "www-authenticate" {
			challenge = h.GetHeader().GetValue()
		}
	}
	if !strings.HasPrefix(challenge, `Bearer realm="tenantguard"`) {
		t.Errorf("WWW-Authenticate %q", challenge)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body.Error.Code == "" || body.Error.Message == "" {
		t.Fatalf("body %q is not a JSON error: %v", d.GetBody(), err)
	}
	return body.Error.Code
}

func TestCheckValidToken(t *testing.T) {
	f := newFixture(t, session.Config{}, authz.Options{StripAuthorization: true})
	s, tok := f.create(t, "acme", "alice")
	// The client also sends forged identity headers: they are overwritten.
	h := bearer(tok)
	h[authz.HeaderTenant] = "globex"
	h[authz.HeaderUser] = "mallory"
	resp := f.check(t, h)
	got := okHeaders(t, resp)
	want := map[string]string{authz.HeaderTenant: "acme", authz.HeaderUser: "alice", authz.HeaderSession: s.ID}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if rm := resp.GetOkResponse().GetHeadersToRemove(); len(rm) != 1 || rm[0] != "authorization" {
		t.Errorf("headers to remove %v, want [authorization]", rm)
	}
	// Envoy with encode_raw_headers sends HeaderMap instead of Headers.
	req := envoyRequest(nil)
	hr := req.Attributes.Request.Http
	hr.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "authorization", RawValue: []byte("bearer " + tok)}}}
	hr.Headers = nil
	resp2, err := f.client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if okHeaders(t, resp2)[authz.HeaderTenant] != "acme" {
		t.Error("raw header map not honoured")
	}
}

func TestCheckKeepsAuthorizationUnlessConfigured(t *testing.T) {
	f := newFixture(t, session.Config{}, authz.Options{})
	_, tok := f.create(t, "acme", "alice")
	resp := f.check(t, bearer(tok))
	okHeaders(t, resp)
	if rm := resp.GetOkResponse().GetHeadersToRemove(); len(rm) != 0 {
		t.Errorf("headers to remove %v, want none", rm)
	}
}

func TestCheckDenials(t *testing.T) {
	now := time.Now()
	f := newFixture(t, session.Config{}, authz.Options{})
	_, tok := f.create(t, "acme", "alice")

	other, err := token.GenerateKey("k2") // a key the verifier does not hold
	if err != nil {
		t.Fatal(err)
	}
	c, _ := token.NewClaims("acme", "alice", now, time.Hour)
	otherTok, _ := other.Sign(c)
	expC := token.Claims{SessionID: token.NewSessionID(), TenantID: "acme", UserID: "alice", IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}
	expired, err := f.key.Sign(expC)
	if err != nil {
		t.Fatal(err)
	}
	// One bit flipped in the middle of the signature, and in the payload.
	flip := func(s string, i int) string {
		b := []byte(s)
		const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		j := strings.IndexByte(alpha, b[i])
		b[i] = alpha[j^1]
		return string(b)
	}
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"missing", nil, authz.CodeMissing},
		{"empty", map[string]string{"authorization": ""}, authz.CodeMissing},
		{"wrong scheme", map[string]string{"authorization": "Basic YWNtZTpzZWNyZXQ="}, authz.CodeWrongScheme},
		{"token without scheme", map[string]string{"authorization": tok}, authz.CodeWrongScheme},
		{"garbage", bearer("not-a-token"), authz.CodeMalformed},
		{"jwt", bearer("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"), authz.CodeMalformed},
		{"truncated", bearer(tok[:len(tok)-10]), authz.CodeMalformed},
		{"tampered signature bit", bearer(flip(tok, len(tok)-100)), authz.CodeInvalid},
		{"tampered payload bit", bearer(flip(tok, 10)), authz.CodeInvalid},
		{"expired", bearer(expired), authz.CodeExpired},
		{"other key id", bearer(otherTok), authz.CodeInvalid},
		{"unknown session", bearer(mustSign(t, f.key, "acme")), authz.CodeRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := denialCode(t, f.check(t, tc.headers)); got != tc.want {
				t.Errorf("code %q, want %q", got, tc.want)
			}
		})
	}
}

// mustSign signs a well-formed token for a session the store never issued.
func mustSign(t *testing.T, k *token.SigningKey, tenant string) string {
	t.Helper()
	c, err := token.NewClaims(tenant, "eve", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := k.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRevocationWithinASecond(t *testing.T) {
	f := newFixture(t, session.Config{}, authz.Options{})
	s, tok := f.create(t, "acme", "alice")
	_, other := f.create(t, "acme", "bob")
	okHeaders(t, f.check(t, bearer(tok))) // now cached
	okHeaders(t, f.check(t, bearer(tok)))
	if err := f.store.Revoke(context.Background(), s.ID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		resp := f.check(t, bearer(tok))
		if resp.GetStatus().GetCode() != int32(codes.OK) {
			if code := denialCode(t, resp); code != authz.CodeRevoked {
				t.Fatalf("code %q, want %q", code, authz.CodeRevoked)
			}
			break
		}
		if time.Since(start) > time.Second {
			t.Fatal("revoked token still accepted after 1s")
		}
	}
	t.Logf("revocation took effect after %v", time.Since(start))
	okHeaders(t, f.check(t, bearer(other))) // another session is untouched
}

func TestKeyRotation(t *testing.T) {
	f := newFixture(t, session.Config{}, authz.Options{})
	_, oldTok := f.create(t, "acme", "alice")
	next, err := token.GenerateKey("k-next")
	if err != nil {
		t.Fatal(err)
	}
	// Rotation: every verifier learns the new key, then the issuer signs with it.
	if err := f.tv.AddKey(next.Public()); err != nil {
		t.Fatal(err)
	}
	f.store.SetSigningKey(next)
	_, newTok := f.create(t, "acme", "bob")
	okHeaders(t, f.check(t, bearer(oldTok)))
	okHeaders(t, f.check(t, bearer(newTok)))
	// Retire the old key: its tokens stop working (even though cached), the new ones keep working.
	f.tv.RemoveKey("k1")
	if code := denialCode(t, f.check(t, bearer(oldTok))); code != authz.CodeInvalid {
		t.Errorf("old key's token after retirement: %q", code)
	}
	okHeaders(t, f.check(t, bearer(newTok)))
}

func TestTenantNoLongerAllowed(t *testing.T) {
	allowed := map[string]bool{"acme": true}
	f := newFixture(t, session.Config{}, authz.Options{TenantAllowed: func(id string) bool { return allowed[id] }})
	_, tok := f.create(t, "globex", "gina")
	if code := denialCode(t, f.check(t, bearer(tok))); code != authz.CodeForbidden {
		t.Errorf("code %q", code)
	}
}

// deniedBody returns the HTTP status and JSON error code of a denial.
func deniedBody(t *testing.T, resp *authv3.CheckResponse) (typev3.StatusCode, string) {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("allowed, want denied: %v", resp)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		t.Fatalf("body %q: %v", d.GetBody(), err)
	}
	return d.GetStatus().GetCode(), body.Error.Code
}

func TestStoreDownFailsClosedAndRecovers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
	}{
		{"no grace", 0},
		{"grace", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			ctx := context.Background()
			rs, err := redisserver.Start(ctx, redisserver.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rs.Close() })
			rdb := goredis.NewClient(&goredis.Options{Addr: rs.Addr(), Protocol: 2, DisableIdentity: true,
				MaxRetries: -1, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
			t.Cleanup(func() { _ = rdb.Close() })
			f := newFixtureOn(t, rdb, session.Config{Grace: tc.grace}, authz.Options{})
			_, seen := f.create(t, "acme", "alice")
			_, unseen := f.create(t, "acme", "bob")
			okHeaders(t, f.check(t, bearer(seen)))

			if err := rs.Stop(); err != nil {
				t.Fatal(err)
			}
			// A token never verified before cannot be checked against
			// revocations: refused with 503 whatever the grace.
			harness.Eventually(t, 5*time.Second, func() error {
				st, code := deniedBody(t, f.check(t, bearer(unseen)))
				if st != typev3.StatusCode_ServiceUnavailable || code != authz.CodeUnavailable {
					return fmt.Errorf("got %v %q", st, code)
				}
				return nil
			})
			resp := f.check(t, bearer(seen))
			if tc.grace == 0 {
				if st, code := deniedBody(t, resp); st != typev3.StatusCode_ServiceUnavailable || code != authz.CodeUnavailable {
					t.Errorf("cached token with no grace: %v %q, want 503 %s", st, code, authz.CodeUnavailable)
				}
			} else {
				okHeaders(t, resp) // within the grace, the cached verdict holds
			}

			if err := rs.Start(ctx); err != nil {
				t.Fatal(err)
			}
			// The restarted server is empty (no persistence): the old sessions
			// are gone and stay refused; a new one works once the verifier
			// has reconnected, without restarting anything.
			var fresh string
			harness.Eventually(t, 10*time.Second, func() error {
				_, tok, err := f.store.Create(ctx, "acme", "carol")
				fresh = tok
				return err
			})
			harness.Eventually(t, 10*time.Second, func() error {
				if resp := f.check(t, bearer(fresh)); resp.GetStatus().GetCode() != int32(codes.OK) {
					return fmt.Errorf("not recovered: %s", resp.GetDeniedResponse().GetBody())
				}
				return nil
			})
			if code := denialCode(t, f.check(t, bearer(unseen))); code != authz.CodeRevoked {
				t.Errorf("a session lost with the store: %q, want %q", code, authz.CodeRevoked)
			}
		})
	}
}
