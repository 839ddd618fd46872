package pg_test

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestColdPoolConcurrency: many clients start at once on a cold pool, each
// with its own settings to replay, and every request gets its reply.
func TestColdPoolConcurrency(t *testing.T) {
	pg := upstream(t)
	for round := 0; round < 5; round++ {
		func() {
			p := startProxy(t, pg, func(c *proxypgConfig) { c.PoolSize = 20 })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for i := 0; i < 16; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := pgx.Connect(ctx, p.acmeURL("application_name", "pgbench"))
					if err != nil {
						errs <- err
						return
					}
					defer c.Close(context.Background())
					for j := 0; j < 300; j++ {
						var n int
						if err := c.QueryRow(ctx, "SELECT qty FROM items WHERE id = 3", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("round %d: %v", round, err)
			}
		}()
	}
}

// TestColdPoolPgbench repeats short pgbench runs against a cold pool.
func TestColdPoolPgbench(t *testing.T) {
	pg := upstream(t)
	ctx := ctxT(t, 5*time.Minute)
	_ = pg.CreateDatabase(ctx, "bench")
	if out, err := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", "1", pg.AdminURL("bench")).CombinedOutput(); err != nil {
		t.Logf("pgbench -i: %v %s", err, out)
	}
	if err := pg.Exec(ctx, "bench", "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "+appRole); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		func() {
			p := startProxy(t, pg, func(c *proxypgConfig) {
				c.PoolSize = 20
				c.Databases = append(c.Databases, proxypgDatabase{Name: "bench", URL: strings.Replace(c.Databases[0].URL, "/app?", "/bench?", 1)})
			})
			u := strings.Replace(p.acmeURL(), "/app?", "/bench?", 1)
			rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(rctx, "pgbench", "-n", "-S", "-c", "16", "-j", "2", "-T", "1", "-M", "simple", u).CombinedOutput()
			if err != nil {
				t.Fatalf("round %d: %v\n%s", round, err, out)
			}
		}()
	}
}
