package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/extauthz/api"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const adminToken = "test-admin-token-0123456789"

type fixture struct {
	srv *httptest.Server
	tv  *token.Verifier
}

func newFixture(t *testing.T, cfg session.Config) *fixture {
	t.Helper()
	rdb := goredis.NewClient(&goredis.Options{Addr: harness.Redis(t).Addr(), DB: 3, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { _ = rdb.Close() })
	key, err := token.GenerateKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	tv, err := token.NewVerifier(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	cfg.KeyPrefix = "tg:apitest:" + strings.ReplaceAll(t.Name(), "/", ":") + ":"
	cfg.Channel = cfg.KeyPrefix + "revoked"
	store := session.NewStore(rdb, key, cfg)
	h, err := api.New(store, adminToken, func(id string) bool { return id == "acme" || id == "globex" }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, tv: tv}
}

// do sends a request with the admin token (unless auth is "") and decodes
// the JSON answer into out (if not nil).
func (f *fixture) do(t *testing.T, method, path, auth, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNoContent && resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s: content type %q", method, path, resp.Header.Get("Content-Type"))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

const admin = "Bearer " + adminToken

type apiError struct {
	Error struct{ Code, Message string }
}

type issued struct {
	SessionID string    `json:"session_id"`
	Tenant    string    `json:"tenant_id"`
	User      string    `json:"user_id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (f *fixture) create(t *testing.T, tenant, user string) issued {
	t.Helper()
	var out issued
	if st := f.do(t, "POST", "/v1/sessions", admin, `{"tenant_id":"`+tenant+`","user_id":"`+user+`"}`, &out); st != http.StatusCreated {
		t.Fatalf("create: %d", st)
	}
	return out
}

func TestAdminTokenRequired(t *testing.T) {
	f := newFixture(t, session.Config{})
	for _, auth := range []string{"", "Bearer wrong", "Basic " + adminToken, adminToken, "Bearer " + adminToken + "x"} {
		var e apiError
		if st := f.do(t, "POST", "/v1/sessions", auth, `{"tenant_id":"acme","user_id":"alice"}`, &e); st != http.StatusUnauthorized || e.Error.Code != api.CodeUnauthorized {
			t.Errorf("auth %q: %d %q", auth, st, e.Error.Code)
		}
	}
}

func TestSessionLifecycle(t *testing.T) {
	f := newFixture(t, session.Config{TTL: time.Minute, MaxAge: time.Hour})
	s := f.create(t, "acme", "alice")
	c, err := f.tv.Verify(s.Token, time.Now())
	if err != nil {
		t.Fatalf("issued token does not verify: %v", err)
	}
	if c.TenantID != "acme" || c.UserID != "alice" || c.SessionID.String() != s.SessionID || s.Tenant != "acme" {
		t.Fatalf("claims %+v for %+v", c, s)
	}
	if d := time.Until(s.ExpiresAt); d < 50*time.Second || d > 61*time.Second {
		t.Errorf("expires in %v, want about the 1m TTL", d)
	}

	var got map[string]any
	if st := f.do(t, "GET", "/v1/sessions/"+s.SessionID, admin, "", &got); st != http.StatusOK || got["tenant_id"] != "acme" {
		t.Fatalf("get: %d %v", st, got)
	}
	if _, leaked := got["token"]; leaked {
		t.Error("GET returns the token")
	}

	var r issued
	if st := f.do(t, "POST", "/v1/sessions/"+s.SessionID+"/refresh", admin, "", &r); st != http.StatusOK || r.SessionID != s.SessionID || r.Token == "" || r.Token == s.Token {
		t.Fatalf("refresh: %d %+v", st, r)
	}
	if _, err := f.tv.Verify(r.Token, time.Now()); err != nil {
		t.Fatalf("refreshed token: %v", err)
	}

	f.create(t, "acme", "bob")
	g := f.create(t, "globex", "gina")
	var list struct{ Sessions []map[string]any }
	if st := f.do(t, "GET", "/v1/tenants/acme/sessions", admin, "", &list); st != http.StatusOK || len(list.Sessions) != 2 {
		t.Fatalf("list acme: %d %v", st, list)
	}
	for _, x := range list.Sessions {
		if x["tenant_id"] != "acme" {
			t.Errorf("acme's list holds %v", x)
		}
	}

	var a map[string]any
	if st := f.do(t, "GET", "/v1/sessions/"+s.SessionID+"/analytics", admin, "", &a); st != http.StatusOK || a["session_id"] != s.SessionID {
		t.Fatalf("analytics: %d %v", st, a)
	}

	if st := f.do(t, "DELETE", "/v1/sessions/"+s.SessionID, admin, "", nil); st != http.StatusNoContent {
		t.Fatalf("delete: %d", st)
	}
	var e apiError
	if st := f.do(t, "GET", "/v1/sessions/"+s.SessionID, admin, "", &e); st != http.StatusNotFound || e.Error.Code != api.CodeNotFound {
		t.Fatalf("get after delete: %d %q", st, e.Error.Code)
	}
	if st := f.do(t, "DELETE", "/v1/sessions/"+s.SessionID, admin, "", &e); st != http.StatusNotFound {
		t.Fatalf("second delete: %d", st)
	}
	if st := f.do(t, "POST", "/v1/sessions/"+s.SessionID+"/refresh", admin, "", &e); st != http.StatusNotFound || e.Error.Code != api.CodeNotFound {
		t.Fatalf("refresh after delete: %d %q", st, e.Error.Code)
	}

	var n struct{ Revoked int }
	if st := f.do(t, "DELETE", "/v1/tenants/acme/sessions", admin, "", &n); st != http.StatusOK || n.Revoked != 1 {
		t.Fatalf("revoke tenant: %d %+v", st, n)
	}
	if st := f.do(t, "GET", "/v1/tenants/acme/sessions", admin, "", &list); st != http.StatusOK || len(list.Sessions) != 0 {
		t.Fatalf("acme after revoke: %v", list)
	}
	// The other tenant's session is untouched.
	if st := f.do(t, "GET", "/v1/sessions/"+g.SessionID, admin, "", &got); st != http.StatusOK {
		t.Fatalf("globex session after acme's revoke: %d", st)
	}
}

func TestRefreshStopsAtMaxAge(t *testing.T) {
	f := newFixture(t, session.Config{TTL: 2 * time.Second, MaxAge: 2 * time.Second})
	s := f.create(t, "acme", "alice")
	var e apiError
	if st := f.do(t, "POST", "/v1/sessions/"+s.SessionID+"/refresh", admin, "", &e); st != http.StatusConflict || e.Error.Code != api.CodeMaxAge {
		t.Fatalf("refresh at max age: %d %q", st, e.Error.Code)
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, session.Config{})
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown tenant", "POST", "/v1/sessions", `{"tenant_id":"initech","user_id":"peter"}`, 404, api.CodeUnknownTenant},
		{"bad tenant id", "POST", "/v1/sessions", `{"tenant_id":"Acme!","user_id":"alice"}`, 400, api.CodeInvalidRequest},
		{"missing user", "POST", "/v1/sessions", `{"tenant_id":"acme"}`, 400, api.CodeInvalidRequest},
		{"user with space", "POST", "/v1/sessions", `{"tenant_id":"acme","user_id":"a b"}`, 400, api.CodeInvalidRequest},
		{"unknown field", "POST", "/v1/sessions", `{"tenant_id":"acme","user_id":"alice","admin":true}`, 400, api.CodeInvalidRequest},
		{"not json", "POST", "/v1/sessions", `tenant=acme`, 400, api.CodeInvalidRequest},
		{"two values", "POST", "/v1/sessions", `{"tenant_id":"acme","user_id":"alice"}{}`, 400, api.CodeInvalidRequest},
		{"huge body", "POST", "/v1/sessions", `{"tenant_id":"acme","user_id":"` + strings.Repeat("a", 1<<20) + `"}`, 400, api.CodeInvalidRequest},
		{"bad session id", "GET", "/v1/sessions/xyz", "", 400, api.CodeInvalidRequest},
		{"unknown session", "GET", "/v1/sessions/0123456789abcdef0123456789abcdef", "", 404, api.CodeNotFound},
		{"bad tenant in path", "GET", "/v1/tenants/ACME/sessions", "", 400, api.CodeInvalidRequest},
		{"no such endpoint", "GET", "/v1/nothing", "", 404, api.CodeInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e apiError
			if st := f.do(t, tc.method, tc.path, admin, tc.body, &e); st != tc.status || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Errorf("%d %q %q, want %d %q", st, e.Error.Code, e.Error.Message, tc.status, tc.code)
			}
		})
	}
}

func TestStoreUnavailable(t *testing.T) {
	key, _ := token.GenerateKey("k1")
	// Nothing listens on port 1.
	rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond, DisableIdentity: true})
	defer rdb.Close()
	h, err := api.New(session.NewStore(rdb, key, session.Config{}), adminToken, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequestWithContext(context.Background(), "POST", "/v1/sessions", strings.NewReader(`{"tenant_id":"acme","user_id":"alice"}`))
	req.Header.Set("Authorization", admin)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var e apiError
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != http.StatusServiceUnavailable || e.Error.Code != api.CodeStoreUnavailable {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

// TestCurlDefaults: curl -d sends a form content type; JSON bodies work
// regardless, as the README's example relies on.
func TestCurlDefaults(t *testing.T) {
	f := newFixture(t, session.Config{})
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/sessions", strings.NewReader(`{"tenant_id":"acme","user_id":"alice"}`))
	req.Header.Set("Authorization", admin)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
