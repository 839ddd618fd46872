package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const acmeSecret = "acme-secret-1"

// startSidecar starts a sidecar on the harness's PostgreSQL and
// redis-server, with the Redis listener in namespace mode ns and no
// emulated commands, and runs it until the test ends.
func startSidecar(t *testing.T, ns string) *Sidecar {
	t.Helper()
	pg, rd := harness.Postgres(t), harness.Redis(t)
	yml := fmt.Sprintf(`listen:
  postgres: 127.0.0.1:0
  redis: 127.0.0.1:0
redis:
  upstream: %q
  namespace: %s
postgres:
  databases:
    - name: postgres
      url: %q
tenants:
  - id: acme
    passwords: [%q]
`, rd.Addr(), ns, pg.AdminURL("postgres"), acmeSecret)
	cfg, err := config.Parse("test", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return sc
}

// pushed is the sidecar's tenants as a pushed policy, with redis rules.
func pushed(redis *policypb.RedisRules) *policypb.Policy {
	p := policypb.FromSpec(policy.Spec{Tenants: []policy.TenantSpec{{ID: "acme", Passwords: []string{acmeSecret}}}})
	p.Redis = redis
	return p
}

// respConn is a minimal RESP client: one command, one reply line.
type respConn struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
}

func dialRESP(t *testing.T, addr string) *respConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &respConn{t: t, c: c, rd: bufio.NewReader(c)}
}

// do sends args and returns the reply's first line (enough for the
// simple, error and integer replies used here).
func (r *respConn) do(args ...string) string {
	r.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_ = r.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(r.c, b.String()); err != nil {
		r.t.Fatal(err)
	}
	line, err := r.rd.ReadString('\n')
	if err != nil {
		r.t.Fatalf("%v: %v", args, err)
	}
	return line
}

// TestApplyPolicyRedisRules pushes redis sections to a running sidecar:
// an open connection's next command follows allow_scripting and emulate,
// a policy without the section brings back the configuration's rules,
// and a namespace other than the running one is NACKed with the policy
// and the rules in force kept.
func TestApplyPolicyRedisRules(t *testing.T) {
	sc := startSidecar(t, "spread")
	c := dialRESP(t, sc.RedisAddr())
	if got := c.do("AUTH", "acme", acmeSecret); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	spread := policypb.NamespaceMode_NAMESPACE_MODE_SPREAD
	oneSlot := policypb.NamespaceMode_NAMESPACE_MODE_ONE_SLOT
	for _, tc := range []struct {
		name    string
		redis   *policypb.RedisRules
		wantErr string // a NACK's message contains it
		eval    string // prefix of EVAL's reply afterwards
		flushdb string // prefix of FLUSHDB's reply afterwards
	}{
		{"configuration's rules", nil, "", ":1", "-NOPERM"},
		{"scripting off and flushdb pushed", &policypb.RedisRules{Namespace: spread, AllowScripting: proto.Bool(false), Emulate: []string{"flushdb"}}, "", "-NOPERM", "+OK"},
		{"namespace change refused", &policypb.RedisRules{Namespace: oneSlot}, "needs a restart", "-NOPERM", "+OK"},
		{"unset scripting is allowed", &policypb.RedisRules{Emulate: []string{"flushdb"}}, "", ":1", "+OK"},
		{"section removed", nil, "", ":1", "-NOPERM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sc.applyPolicy(tc.name, pushed(tc.redis))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("applyPolicy: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("applyPolicy: %v, want an error containing %q", err, tc.wantErr)
			}
			if v := sc.Policy().Version(); tc.wantErr != "" && v == tc.name {
				t.Fatalf("a NACKed policy is in force (version %q)", v)
			}
			if got := c.do("EVAL", "return 1", "0"); !strings.HasPrefix(got, tc.eval) {
				t.Errorf("EVAL: %q, want %q...", got, tc.eval)
			}
			if got := c.do("FLUSHDB"); !strings.HasPrefix(got, tc.flushdb) {
				t.Errorf("FLUSHDB: %q, want %q...", got, tc.flushdb)
			}
		})
	}
}

// TestApplyPolicyEndMode: a pushed sessions.end_mode reaches both
// listeners; an unset one (or no section) restores the configured mode.
func TestApplyPolicyEndMode(t *testing.T) {
	sc := startSidecar(t, "spread")
	for _, tc := range []struct {
		name     string
		sessions *policypb.SessionSettings
		want     policy.SessionEndMode
	}{
		{"configured", nil, policy.SessionEndBoundary},
		{"immediate pushed", &policypb.SessionSettings{EndMode: policypb.SessionEndMode_SESSION_END_MODE_IMMEDIATE}, policy.SessionEndImmediate},
		{"unset keeps the configuration's", &policypb.SessionSettings{}, policy.SessionEndBoundary},
		{"immediate again", &policypb.SessionSettings{EndMode: policypb.SessionEndMode_SESSION_END_MODE_IMMEDIATE}, policy.SessionEndImmediate},
		{"section removed", nil, policy.SessionEndBoundary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pushed(nil)
			p.Sessions = tc.sessions
			if err := sc.applyPolicy(tc.name, p); err != nil {
				t.Fatal(err)
			}
			if got, got2 := sc.pg.SessionEnd(), sc.redis.SessionEnd(); got != tc.want || got2 != tc.want {
				t.Fatalf("end mode pg %q redis %q, want %q", got, got2, tc.want)
			}
		})
	}
}
