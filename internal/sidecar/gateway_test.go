package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestGatewayMode runs the sidecar as a gateway: listening on "its pod
// IP" from the environment (${TG_TEST_POD_IP}, a loopback alias here),
// serving clients from two other addresses (two app pods), with
// max_client_connections_per_source 1: the second connection of one pod
// is refused with 53300 while the other pod is served, and the admin
// endpoint's metrics count both sources.
func TestGatewayMode(t *testing.T) {
	if c, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9}); err != nil && strings.Contains(err.Error(), "assign requested address") {
		t.Skip("this system's loopback has only 127.0.0.1")
	} else if c != nil {
		_ = c.Close()
	}
	t.Setenv("TG_TEST_POD_IP", "127.0.0.5")
	pg := harness.Postgres(t)
	yml := fmt.Sprintf(`listen:
  postgres: ${TG_TEST_POD_IP}:0
  admin: 127.0.0.1:0
postgres:
  databases:
    - name: postgres
      url: %q
  max_client_connections_per_source: 1
tenants:
  - id: acme
    passwords: [%q]
`, pg.AdminURL("postgres"), acmeSecret)
	cfg, err := config.Parse("gateway.yaml", []byte(yml))
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
	if host, _, _ := net.SplitHostPort(sc.PostgresAddr()); host != "127.0.0.5" {
		t.Fatalf("listening on %s, want the pod IP 127.0.0.5", sc.PostgresAddr())
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	from := func(src string) (*pgx.Conn, error) {
		c, err := pgx.ParseConfig(fmt.Sprintf("postgres://acme:%s@%s/postgres?sslmode=disable", acmeSecret, sc.PostgresAddr()))
		if err != nil {
			return nil, err
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c.DialFunc = d.DialContext
		return pgx.ConnectConfig(cctx, c)
	}
	a, err := from("127.0.0.2")
	if err != nil {
		t.Fatalf("pod 127.0.0.2: %v", err)
	}
	defer a.Close(context.Background())
	if _, err := from("127.0.0.2"); err == nil || !strings.Contains(err.Error(), "53300") {
		t.Fatalf("second connection of pod 127.0.0.2: %v, want 53300", err)
	}
	b, err := from("127.0.0.3")
	if err != nil {
		t.Fatalf("pod 127.0.0.3 next to a full 127.0.0.2: %v", err)
	}
	defer b.Close(context.Background())
	for _, c := range []*pgx.Conn{a, b} {
		if _, err := c.Exec(cctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + sc.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"tenantguard_pg_client_sources 2", "tenantguard_pg_clients_refused_per_source_total 1"} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}
