package pg_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
)

// connectFrom connects to the proxy from source address src (a loopback
// alias standing for one app pod of a gateway).
func connectFrom(ctx context.Context, src, connString string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	cfg.DialFunc = d.DialContext
	return pgx.ConnectConfig(ctx, cfg)
}

// TestGatewayPerSource: one listener serving clients from several source
// addresses (a gateway in front of many app pods), with
// max_client_connections_per_source 2. A third connection from one
// address is refused with 53300 naming the setting while another address
// is served; each client stays bound to its own tenant whatever the
// address; a freed slot serves the address again; the source metrics
// count both.
func TestGatewayPerSource(t *testing.T) {
	if c, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9}); err != nil && strings.Contains(err.Error(), "assign requested address") {
		t.Skip("this system's loopback has only 127.0.0.1")
	} else if c != nil {
		_ = c.Close()
	}
	p := startIsolated(t, func(c *proxypg.Config) { c.MaxClientConnsPerSource = 2 })
	ctx := ctxT(t, time.Minute)
	var pod2 []*pgx.Conn
	for range 2 {
		c, err := connectFrom(ctx, "127.0.0.2", p.acmeURL())
		if err != nil {
			t.Fatalf("from 127.0.0.2: %v", err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		pod2 = append(pod2, c)
	}
	_, err := connectFrom(ctx, "127.0.0.2", p.acmeURL())
	if !isCode(err, "53300") || !strings.Contains(err.Error(), "max_client_connections_per_source") {
		t.Fatalf("third from 127.0.0.2: %v, want 53300 naming max_client_connections_per_source", err)
	}
	pod3, err := connectFrom(ctx, "127.0.0.3", p.url("globex", globexSecret))
	if err != nil {
		t.Fatalf("from 127.0.0.3 next to a full 127.0.0.2: %v", err)
	}
	defer pod3.Close(context.Background())

	// Isolation holds whatever the address: each sees its own rows only.
	for _, tc := range []struct {
		name string
		c    *pgx.Conn
		want string
	}{{"acme from 127.0.0.2", pod2[0], "acme"}, {"globex from 127.0.0.3", pod3, "globex"}} {
		got, err := tenantRows(ctx, tc.c)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(got) != 1 || got[tc.want] == 0 {
			t.Errorf("%s sees the rows of %v", tc.name, got)
		}
	}

	if got := p.metric(t, "tenantguard_pg_client_sources", nil); got != 2 {
		t.Errorf("tenantguard_pg_client_sources = %v, want 2", got)
	}
	if got := p.metric(t, "tenantguard_pg_clients_refused_per_source_total", nil); got != 1 {
		t.Errorf("tenantguard_pg_clients_refused_per_source_total = %v, want 1", got)
	}

	// A slot freed by 127.0.0.2 serves it again (once the proxy has seen
	// the close).
	pod2[0].Close(ctx)
	harness.Eventually(t, 10*time.Second, func() error {
		c, err := connectFrom(ctx, "127.0.0.2", p.acmeURL())
		if err != nil {
			return err
		}
		c.Close(ctx)
		return nil
	})
}
