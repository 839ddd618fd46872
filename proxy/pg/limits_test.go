package pg_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestMaxClientConnections: max_client_connections N admits exactly N
// client connections (it admitted N+1), refuses the next with 53300, and
// admits again once one leaves.
func TestMaxClientConnections(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.MaxClientConns = 3 })
	ctx := ctxT(t, 30*time.Second)
	var conns []*pgx.Conn
	for i := 0; i < 3; i++ {
		c, err := pgx.Connect(ctx, p.acmeURL())
		if err != nil {
			t.Fatalf("client %d of 3: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	_, err := pgx.Connect(ctx, p.acmeURL())
	assertSQLState(t, err, "53300")
	conns[0].Close(ctx)
	harness.Eventually(t, 5*time.Second, func() error {
		c, err := pgx.Connect(ctx, p.acmeURL())
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	for _, c := range conns[1:] {
		c.Close(ctx)
	}
}
