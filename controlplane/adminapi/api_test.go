package adminapi_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const adminToken = "admin-token-0123456789"

var dbSeq atomic.Int64

// server is the API over a store on a database of the test's own.
type server struct {
	t     *testing.T
	url   string
	store *store.Store
	pgURL string
	exec  func(sql string)
}

func newServer(t *testing.T, opts ...store.Option) *server {
	t.Helper()
	return newServerOn(t, harness.Postgres(t), opts...)
}

// newServerOn is newServer on a PostgreSQL of the test's choosing.
func newServerOn(t *testing.T, pg *pgcluster.Cluster, opts ...store.Option) *server {
	t.Helper()
	name := fmt.Sprintf("cp_adminapi_%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.Exec(ctx, "postgres", "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	s := serverOnURL(t, pg.AdminURL(name), opts...)
	s.exec = func(sql string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := pg.Exec(ctx, name, sql); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// serverOnURL is the API over a store on an existing database, stopped
// when the test ends (after which no goroutine it started may be left).
func serverOnURL(t *testing.T, pgURL string, opts ...store.Option) *server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ignore := goleak.IgnoreCurrent()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	st, err := store.Open(ctx, pgURL, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	h, err := adminapi.New(st, adminToken, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		st.Close()
		goleak.VerifyNone(t, ignore,
			goleak.IgnoreAnyFunction("github.com/tenantguard/tenantguard/internal/fixture/childproc.(*Process).wait"))
	})
	return &server{t: t, url: srv.URL, store: st, pgURL: pgURL}
}

// response is an answer with its JSON body decoded (raw keeps the text).
type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// errorCode is the error.code of an error body.
func (r response) errorCode() string {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (r response) errorField() string {
	e, _ := r.body["error"].(map[string]any)
	f, _ := e["field"].(string)
	return f
}

func (r response) num(key string) int64 {
	f, _ := r.body[key].(float64)
	return int64(f)
}

// do sends a request with the admin token; header pairs follow body.
func (s *server) do(method, path, body string, header ...string) response {
	s.t.Helper()
	return s.doAs(adminToken, method, path, body, header...)
}

func (s *server) doAs(token, method, path, body string, header ...string) response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

var (
	verifierOnce sync.Once
	verifier     string
)

func credential(t *testing.T) string {
	t.Helper()
	verifierOnce.Do(func() {
		p := &policypb.Policy{Tenants: []*policypb.Tenant{{Id: "x", Credentials: []string{"password-1"}}}}
		if err := policypb.HashCredentials(p); err != nil {
			t.Fatal(err)
		}
		verifier = p.Tenants[0].Credentials[0]
	})
	return verifier
}

// policyJSON is a valid policy document with the given tenants.
func policyJSON(t *testing.T, tenants ...string) string {
	t.Helper()
	var ts []string
	for _, id := range tenants {
		ts = append(ts, fmt.Sprintf(`{"id": %q, "credentials": [%q]}`, id, credential(t)))
	}
	return `{"tenants": [` + strings.Join(ts, ", ") + `], "tables": [{"name": "public.orders", "tenant_column": "tenant_id"}]}`
}

func TestAuth(t *testing.T) {
	s := newServer(t)
	for _, tc := range []struct {
		name, token, method, path string
	}{
		{"no token", "", "GET", "/v1/policy"},
		{"wrong token", "admin-token-0123456780", "GET", "/v1/policy"},
		{"token prefix", "admin-token", "PUT", "/v1/policy"},
		{"wrong token on audit", "nope", "GET", "/v1/audit"},
		{"unknown endpoint without token", "", "GET", "/v1/nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.doAs(tc.token, tc.method, tc.path, "")
			if r.status != http.StatusUnauthorized || r.errorCode() != adminapi.CodeUnauthorized || r.header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
	}
	req, _ := http.NewRequest("GET", s.url+"/v1/policy", nil)
	req.Header.Set("Authorization", "Basic "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic scheme: %d", resp.StatusCode)
	}
	if _, err := adminapi.New(s.store, "short", nil); err == nil {
		t.Error("a short admin token was accepted")
	}
	if r := s.do("GET", "/v1/nothing", ""); r.status != http.StatusNotFound || r.errorCode() != adminapi.CodeInvalidRequest {
		t.Errorf("unknown endpoint: %d %s", r.status, r.raw)
	}
}

func TestPolicyPutGet(t *testing.T) {
	s := newServer(t)
	if r := s.do("GET", "/v1/policy", ""); r.status != http.StatusNotFound || r.errorCode() != adminapi.CodeNoPolicy {
		t.Fatalf("empty store: %d %s", r.status, r.raw)
	}
	r := s.do("PUT", "/v1/policy", policyJSON(t, "acme"), "X-Author", "alice", "X-Comment", "first", "Content-Type", "application/json")
	if r.status != http.StatusOK || r.num("version") != 1 || r.body["author"] != "alice" || r.body["comment"] != "first" || r.header.Get("ETag") != `"1"` {
		t.Fatalf("put: %d %v %s", r.status, r.header, r.raw)
	}
	if !strings.Contains(r.body["diff"].(string), `+      "id": "acme",`) {
		t.Errorf("put diff: %s", r.body["diff"])
	}
	// Default author; YAML by content type and by sniffing a form-typed body.
	yamlDoc := "tenants:\n  - id: acme\n    credentials: ['" + credential(t) + "']\n  - id: globex\n    credentials: ['" + credential(t) + "']\n"
	r = s.do("PUT", "/v1/policy", yamlDoc, "Content-Type", "application/yaml")
	if r.status != http.StatusOK || r.num("version") != 2 || r.body["author"] != "admin" || r.num("parent") != 1 {
		t.Fatalf("put yaml: %d %s", r.status, r.raw)
	}
	r = s.do("PUT", "/v1/policy", yamlDoc, "Content-Type", "application/x-www-form-urlencoded")
	if r.status != http.StatusOK || r.num("version") != 3 || r.body["diff"] != "" {
		t.Fatalf("put sniffed yaml: %d %s", r.status, r.raw)
	}

	r = s.do("GET", "/v1/policy", "")
	if r.status != http.StatusOK || r.header.Get("ETag") != `"3"` || r.header.Get("X-Policy-Version") != "3" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("get: %d %v", r.status, r.header)
	}
	p, err := policypb.ParseJSON([]byte(r.raw))
	if err != nil || p.GetVersion() != "3" || len(p.GetTenants()) != 2 || p.GetTenants()[1].GetId() != "globex" {
		t.Fatalf("get body: %v %s", err, r.raw)
	}
	r = s.do("GET", "/v1/policy", "", "Accept", "application/yaml")
	if r.header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("get yaml: %v", r.header)
	}
	if p, err := policypb.ParseYAML([]byte(r.raw)); err != nil || len(p.GetTenants()) != 2 {
		t.Fatalf("get yaml body: %v %s", err, r.raw)
	}
	if r := s.do("GET", "/v1/policy", "", "If-None-Match", `"3"`); r.status != http.StatusNotModified {
		t.Errorf("If-None-Match current: %d", r.status)
	}
	if r := s.do("GET", "/v1/policy", "", "If-None-Match", `"2"`); r.status != http.StatusOK {
		t.Errorf("If-None-Match old: %d", r.status)
	}
}

func TestPolicyPutRefused(t *testing.T) {
	s := newServer(t)
	if r := s.do("PUT", "/v1/policy", policyJSON(t, "acme")); r.status != http.StatusOK {
		t.Fatalf("put: %d %s", r.status, r.raw)
	}
	for _, tc := range []struct {
		name   string
		query  string
		body   string
		header []string
		status int
		code   string
		field  string
	}{
		{"plaintext credential", "", `{"tenants": [{"id": "acme", "credentials": ["password-1"]}]}`, nil,
			400, adminapi.CodePlaintextCredential, "tenants[0].credentials[0]"},
		{"short plaintext hashed", "?hash_credentials=true", `{"tenants": [{"id": "acme", "credentials": ["pw"]}]}`, nil,
			400, adminapi.CodeInvalidPolicy, "tenants[0].credentials[0]"},
		{"bad tenant id", "", strings.Replace(policyJSON(t, "acme"), `"acme"`, `"ACME"`, 1), nil,
			400, adminapi.CodeInvalidPolicy, "tenants[0].id"},
		{"duplicate tenant", "", policyJSON(t, "acme", "acme"), nil,
			400, adminapi.CodeInvalidPolicy, "tenants[1].id"},
		{"unknown field", "", `{"tenants": [], "tennants": []}`, nil,
			400, adminapi.CodeInvalidPolicy, "tennants"},
		{"wrong type", "", `{"tenants": [{"id": 5}]}`, nil,
			400, adminapi.CodeInvalidPolicy, "tenants[0].id"},
		{"bad emulate in yaml", "", "redis:\n  emulate: [keys]\n", []string{"Content-Type", "application/yaml"},
			400, adminapi.CodeInvalidPolicy, "redis.emulate[0]"},
		{"not json", "", `{"tenants": [`, nil, 400, adminapi.CodeInvalidPolicy, ""},
		{"stale If-Match", "", policyJSON(t, "acme"), []string{"If-Match", `"0"`}, 412, adminapi.CodeVersionConflict, ""},
		{"future If-Match", "", policyJSON(t, "acme"), []string{"If-Match", `"7"`}, 412, adminapi.CodeVersionConflict, ""},
		{"malformed If-Match", "", policyJSON(t, "acme"), []string{"If-Match", `"a", "b"`}, 400, adminapi.CodeInvalidRequest, ""},
		{"bad hash_credentials", "?hash_credentials=maybe", policyJSON(t, "acme"), nil, 400, adminapi.CodeInvalidRequest, ""},
		{"author too long", "", policyJSON(t, "acme"), []string{"X-Author", strings.Repeat("a", 300)}, 400, adminapi.CodeInvalidRequest, ""},
		{"too large", "", `{"tenants": [], "x": "` + strings.Repeat("x", 9<<20) + `"}`, nil, 413, adminapi.CodeBodyTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do("PUT", "/v1/policy"+tc.query, tc.body, tc.header...)
			if r.status != tc.status || r.errorCode() != tc.code || r.errorField() != tc.field {
				t.Fatalf("%d %.300s; want %d %s field %q", r.status, r.raw, tc.status, tc.code, tc.field)
			}
			if tc.status == http.StatusPreconditionFailed && r.header.Get("ETag") != `"1"` {
				t.Errorf("conflict ETag %q", r.header.Get("ETag"))
			}
		})
	}
	if r := s.do("GET", "/v1/policy", ""); r.header.Get("ETag") != `"1"` {
		t.Fatalf("refused puts changed the policy: %v", r.header)
	}

	// The accepted forms: If-Match current, and plaintext hashed on request.
	r := s.do("PUT", "/v1/policy?hash_credentials=true", `{"tenants": [{"id": "acme", "credentials": ["password-1"]}]}`, "If-Match", `"1"`)
	if r.status != http.StatusOK || r.num("version") != 2 {
		t.Fatalf("conditional put with hashing: %d %s", r.status, r.raw)
	}
	got := s.do("GET", "/v1/policy", "")
	if strings.Contains(got.raw, "password-1") || !strings.Contains(got.raw, "SCRAM-SHA-256$") {
		t.Fatalf("hashed policy: %s", got.raw)
	}
	if r := s.do("PUT", "/v1/policy", policyJSON(t, "acme"), "If-Match", `"1"`); r.status != 412 {
		t.Fatalf("second put on version 1: %d", r.status)
	}
}

func TestVersionsAndRollback(t *testing.T) {
	s := newServer(t)
	for _, tenants := range [][]string{{"acme"}, {"acme", "globex"}, {"globex"}} {
		if r := s.do("PUT", "/v1/policy", policyJSON(t, tenants...), "X-Author", "alice"); r.status != 200 {
			t.Fatalf("put: %d %s", r.status, r.raw)
		}
	}
	for _, tc := range []struct {
		name  string
		query string
		want  []int64
		next  int64
	}{
		{"all", "", []int64{3, 2, 1}, 0},
		{"page", "?limit=2", []int64{3, 2}, 2},
		{"next page", "?limit=2&before=2", []int64{1}, 0},
	} {
		t.Run("list "+tc.name, func(t *testing.T) {
			r := s.do("GET", "/v1/policy/versions"+tc.query, "")
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			var got []int64
			for _, v := range r.body["versions"].([]any) {
				m := v.(map[string]any)
				got = append(got, int64(m["version"].(float64)))
				if m["author"] != "alice" || m["created_at"] == "" || m["policy"] != nil {
					t.Errorf("entry %v", m)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || r.num("next_before") != tc.next {
				t.Errorf("versions %v next %d; want %v next %d", got, r.num("next_before"), tc.want, tc.next)
			}
		})
	}
	for _, q := range []string{"?limit=x", "?before=-1"} {
		if r := s.do("GET", "/v1/policy/versions"+q, ""); r.status != 400 || r.errorCode() != adminapi.CodeInvalidRequest {
			t.Errorf("list %s: %d", q, r.status)
		}
	}

	r := s.do("GET", "/v1/policy/versions/2", "")
	if r.status != 200 || r.num("version") != 2 || r.num("parent") != 1 || !strings.Contains(r.body["diff"].(string), `+      "id": "globex",`) {
		t.Fatalf("version 2: %d %s", r.status, r.raw)
	}
	if pol := r.body["policy"].(map[string]any); pol["version"] != "2" || len(pol["tenants"].([]any)) != 2 {
		t.Fatalf("version 2 policy: %v", pol)
	}
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/policy/versions/9", 404, adminapi.CodeVersionNotFound},
		{"/v1/policy/versions/0", 400, adminapi.CodeInvalidRequest},
		{"/v1/policy/versions/x", 400, adminapi.CodeInvalidRequest},
	} {
		if r := s.do("GET", tc.path, ""); r.status != tc.status || r.errorCode() != tc.code {
			t.Errorf("%s: %d %s", tc.path, r.status, r.raw)
		}
	}

	r = s.do("POST", "/v1/policy/rollback", `{"version": 1}`, "X-Author", "bob")
	if r.status != 200 || r.num("version") != 4 || r.num("parent") != 3 || r.body["author"] != "bob" || r.header.Get("ETag") != `"4"` {
		t.Fatalf("rollback: %d %s", r.status, r.raw)
	}
	cur := s.do("GET", "/v1/policy", "")
	v1 := s.do("GET", "/v1/policy/versions/1", "")
	p4, _ := policypb.ParseJSON([]byte(cur.raw))
	p1raw, _ := json.Marshal(v1.body["policy"])
	p1, _ := policypb.ParseJSON(p1raw)
	p4.Version, p1.Version = "", ""
	a, _ := policypb.MarshalJSON(p4)
	b, _ := policypb.MarshalJSON(p1)
	if string(a) != string(b) {
		t.Fatalf("rollback body:\n%s\nwant:\n%s", a, b)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"version": 99}`, 404, adminapi.CodeVersionNotFound},
		{`{"version": 0}`, 400, adminapi.CodeInvalidRequest},
		{`{"version": 1, "force": true}`, 400, adminapi.CodeInvalidRequest},
		{`{"version": 1} {}`, 400, adminapi.CodeInvalidRequest},
		{`nope`, 400, adminapi.CodeInvalidRequest},
	} {
		if r := s.do("POST", "/v1/policy/rollback", tc.body); r.status != tc.status || r.errorCode() != tc.code {
			t.Errorf("rollback %s: %d %s", tc.body, r.status, r.raw)
		}
	}
}

func TestSuspendResume(t *testing.T) {
	s := newServer(t)
	if r := s.do("POST", "/v1/tenants/acme/suspend", ""); r.status != 404 || r.errorCode() != adminapi.CodeNoPolicy {
		t.Fatalf("suspend with no policy: %d %s", r.status, r.raw)
	}
	if r := s.do("PUT", "/v1/policy", policyJSON(t, "acme", "globex")); r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.raw)
	}
	for _, tc := range []struct {
		name      string
		path      string
		status    int
		code      string
		version   int64
		changed   bool
		suspended bool
	}{
		{"suspend", "/v1/tenants/acme/suspend", 200, "", 2, true, true},
		{"suspend again", "/v1/tenants/acme/suspend", 200, "", 2, false, true},
		{"resume", "/v1/tenants/acme/resume", 200, "", 3, true, false},
		{"resume again", "/v1/tenants/acme/resume", 200, "", 3, false, false},
		{"unknown tenant", "/v1/tenants/initech/suspend", 404, adminapi.CodeUnknownTenant, 0, false, false},
		{"bad tenant id", "/v1/tenants/ACME/suspend", 400, adminapi.CodeInvalidRequest, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do("POST", tc.path, "", "X-Author", "ops")
			if r.status != tc.status || r.errorCode() != tc.code {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if tc.status != 200 {
				return
			}
			if r.num("version") != tc.version || r.body["changed"] != tc.changed || r.body["suspended"] != tc.suspended || r.body["tenant"] != "acme" {
				t.Fatalf("%s", r.raw)
			}
		})
	}
	cur := s.do("GET", "/v1/policy/versions/2", "")
	if !strings.Contains(cur.raw, `"suspended":true`) || cur.body["author"] != "ops" {
		t.Fatalf("version 2: %s", cur.raw)
	}
}

func TestAudit(t *testing.T) {
	s := newServer(t)
	s.do("PUT", "/v1/policy", policyJSON(t, "acme"), "X-Author", "alice")
	s.do("POST", "/v1/tenants/acme/suspend", "", "X-Author", "ops")
	s.do("POST", "/v1/policy/rollback", `{"version": 1}`, "X-Author", "bob")

	r := s.do("GET", "/v1/audit", "")
	if r.status != 200 || r.body["verified"] != true || r.num("checked") != 3 || r.num("verified_seq") != 3 || r.body["first_bad_seq"] != nil ||
		r.body["verification"] != "full" || r.body["signatures_checked"] != false || r.num("keyed_from_seq") != 0 || r.body["last_full_verification"] == nil ||
		r.body["more"] != false || r.body["next_cursor"] == nil {
		t.Fatalf("audit: %d %s", r.status, r.raw)
	}
	entries := r.body["entries"].([]any)
	if len(entries) != 3 {
		t.Fatalf("%d entries", len(entries))
	}
	for i, want := range []struct{ actor, action string }{{"alice", "put"}, {"ops", "suspend"}, {"bob", "rollback"}} {
		e := entries[i].(map[string]any)
		if e["actor"] != want.actor || e["action"] != want.action || len(e["hash"].(string)) != 64 || e["detail"].(map[string]any)["policy_sha256"] == nil ||
			e["key_id"] != nil || e["signature"] != nil {
			t.Errorf("entry %d: %v", i, e)
		}
	}
	if r := s.do("GET", "/v1/audit?after=2&limit=5", ""); len(r.body["entries"].([]any)) != 1 || r.body["verification"] != "incremental" || r.num("checked") != 0 {
		t.Errorf("after=2: %s", r.raw)
	}
	for _, q := range []string{"after=x", "verify=yes", "cursor=3", "cursor=3.abc", "cursor=0." + strings.Repeat("00", 32), "after=1&cursor=1." + strings.Repeat("00", 32)} {
		if r := s.do("GET", "/v1/audit?"+q, ""); r.status != 400 || r.errorCode() != adminapi.CodeInvalidRequest {
			t.Errorf("%s: %d %s", q, r.status, r.raw)
		}
	}

	// An entry before the checkpoint altered in place: the default,
	// incremental check does not read it; a full one does, and from then
	// on every check reports it.
	s.exec(`UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 2`)
	if r := s.do("GET", "/v1/audit", ""); r.status != 200 || r.body["verified"] != true || r.body["verification"] != "incremental" {
		t.Fatalf("incremental after tampering: %d %s", r.status, r.raw)
	}
	for _, q := range []string{"?verify=full", ""} {
		r = s.do("GET", "/v1/audit"+q, "")
		if r.status != 200 || r.body["verified"] != false || r.num("first_bad_seq") != 2 || r.body["problem"] == "" {
			t.Fatalf("tampered audit, %q: %d %s", q, r.status, r.raw)
		}
	}
	if r.num("checked") != 0 || r.body["verification"] != "incremental" {
		t.Errorf("the incremental check after the full one: %s", r.raw)
	}
	if r := s.do("GET", "/v1/audit?verify=full", ""); r.num("checked") != 1 {
		t.Errorf("full check: %s", r.raw)
	}
}

// TestAuditSigned: with an audit key every entry carries its key id and
// a signature that verifies with the public key alone; a control plane
// without the key then refuses to write.
func TestAuditSigned(t *testing.T) {
	key, err := auditkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, store.WithAuditKeys(store.AuditKeys{Signing: key}))
	s.do("PUT", "/v1/policy", policyJSON(t, "acme"), "X-Author", "alice")
	s.do("POST", "/v1/tenants/acme/suspend", "", "X-Author", "ops")
	r := s.do("GET", "/v1/audit", "")
	if r.status != 200 || r.body["verified"] != true || r.num("keyed_from_seq") != 1 || r.body["signatures_checked"] != true {
		t.Fatalf("audit: %d %s", r.status, r.raw)
	}
	pub, _ := auditkey.ParseVerificationKeys(key.Public().MarshalPEM())
	for _, x := range r.body["entries"].([]any) {
		e := x.(map[string]any)
		hash, _ := hex.DecodeString(e["hash"].(string))
		sig, _ := hex.DecodeString(e["signature"].(string))
		if e["key_id"] != key.ID() || !pub[0].VerifyEntry(hash, sig) {
			t.Errorf("entry %v: not signed by %s", e, key.ID())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	unkeyed, err := store.Open(ctx, s.pgURL, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer unkeyed.Close()
	h, err := adminapi.New(unkeyed, adminToken, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1/tenants/acme/resume", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), adminapi.CodeAuditKeyRequired) {
		t.Fatalf("write without the key: %d %s", rec.Code, rec.Body)
	}
}

// TestAuditCursor: next_cursor pages through the trail; a cursor whose
// entry was altered since is refused.
func TestAuditCursor(t *testing.T) {
	s := newServer(t)
	s.do("PUT", "/v1/policy", policyJSON(t, "acme"), "X-Author", "alice")
	for i := range 4 {
		s.do("POST", fmt.Sprintf("/v1/tenants/acme/%s", []string{"suspend", "resume"}[i%2]), "")
	}
	var seqs []int64
	var cursors []string
	path := "/v1/audit?limit=2"
	for {
		r := s.do("GET", path, "")
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.raw)
		}
		for _, x := range r.body["entries"].([]any) {
			seqs = append(seqs, int64(x.(map[string]any)["seq"].(float64)))
		}
		cursors = append(cursors, r.body["next_cursor"].(string))
		if r.body["more"] != true {
			break
		}
		path = "/v1/audit?limit=2&cursor=" + r.body["next_cursor"].(string)
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5]" {
		t.Fatalf("paged %v", seqs)
	}
	// At the end the cursor stays, to poll with.
	if r := s.do("GET", "/v1/audit?cursor="+cursors[2], ""); len(r.body["entries"].([]any)) != 0 || r.body["next_cursor"] != cursors[2] {
		t.Fatalf("after the end: %s", r.raw)
	}
	s.exec(`UPDATE tenantguard_cp.audit SET hash = sha256(hash) WHERE seq = 2`)
	if r := s.do("GET", "/v1/audit?cursor="+cursors[0], ""); r.status != http.StatusConflict || r.errorCode() != adminapi.CodeCursorMismatch {
		t.Fatalf("cursor on an altered entry: %d %s", r.status, r.raw)
	}
}

// failingStore is a store whose database is unreachable.
type failingStore struct{ adminapi.Store }

var errDown = errors.New("dial tcp: connection refused")

func (failingStore) Current(context.Context) (store.Version, error) { return store.Version{}, errDown }
func (failingStore) List(context.Context, int, int64) ([]store.VersionInfo, error) {
	return nil, errDown
}
func (failingStore) Rollback(context.Context, string, int64) (store.Version, error) {
	return store.Version{}, errDown
}
func (failingStore) Audit(context.Context, store.AuditQuery) (store.AuditPage, error) {
	return store.AuditPage{}, nil
}
func (failingStore) VerifyAudit(context.Context, store.VerifyMode) (store.AuditReport, error) {
	return store.AuditReport{}, errDown
}

func TestStoreUnavailable(t *testing.T) {
	h, err := adminapi.New(failingStore{}, adminToken, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/policy", ""},
		{"GET", "/v1/policy/versions", ""},
		{"POST", "/v1/policy/rollback", `{"version": 1}`},
		{"GET", "/v1/audit", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+adminToken)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var body struct {
				Error struct{ Code, Message string }
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != http.StatusServiceUnavailable || body.Error.Code != adminapi.CodeStoreUnavailable || strings.Contains(body.Error.Message, "refused") {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
		})
	}
}
