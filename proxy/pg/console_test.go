package pg_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
	"github.com/tenantguard/tenantguard/wire/scram"
)

const consolePassword = "console-secret"

func startConsoleProxy(t *testing.T) *proxy {
	t.Helper()
	v, err := scram.NewVerifier(consolePassword)
	if err != nil {
		t.Fatal(err)
	}
	return startProxy(t, upstream(t), func(c *proxypgConfig) {
		c.Console = &proxypg.Console{User: "tgadmin", Verifier: v, Version: "test"}
	})
}

// consoleQuery runs one console command with the simple protocol and
// returns its rows by column name.
func consoleQuery(t *testing.T, c *pgx.Conn, cmd string) []map[string]string {
	t.Helper()
	rows, err := c.Query(context.Background(), cmd, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	defer rows.Close()
	var out []map[string]string
	for rows.Next() {
		vals := rows.RawValues()
		row := map[string]string{}
		for i, fd := range rows.FieldDescriptions() {
			row[fd.Name] = string(vals[i])
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return out
}

// TestConsole: the admin console answers PgBouncer's SHOW commands for its
// own user only, PAUSE holds one tenant's new transactions until RESUME
// while others run, and psql drives it as it drives PgBouncer's.
func TestConsole(t *testing.T) {
	p := startConsoleProxy(t)
	ctx := ctxT(t, 60*time.Second)
	consoleURL := p.url("tgadmin", consolePassword)
	consoleURL = strings.Replace(consoleURL, "/app?", "/tenantguard?", 1)

	// Only the console user, only on the console database.
	for _, tc := range []struct{ name, url string }{
		{"tenant on the console", strings.Replace(p.acmeURL(), "/app?", "/tenantguard?", 1)},
		{"console user, wrong password", strings.Replace(p.url("tgadmin", "nope"), "/app?", "/tenantguard?", 1)},
		{"console user on a tenant database", p.url("tgadmin", consolePassword)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pgx.Connect(ctx, tc.url)
			assertSQLState(t, err, "28P01")
		})
	}

	acme := p.connect(t, p.acmeURL("application_name", "orders-api"))
	var n int
	if err := acme.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(consoleURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	con, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("console login: %v", err)
	}
	defer con.Close(ctx)

	pools := consoleQuery(t, con, "SHOW POOLS")
	if len(pools) != 1 || pools[0]["database"] != "app" || pools[0]["user"] != "acme" || pools[0]["cl_idle"] != "1" || pools[0]["pool_mode"] != "transaction" {
		t.Fatalf("SHOW POOLS: %v", pools)
	}
	clients := consoleQuery(t, con, "show clients;")
	if len(clients) != 1 || clients[0]["user"] != "acme" || clients[0]["application_name"] != "orders-api" || clients[0]["type"] != "C" {
		t.Fatalf("SHOW CLIENTS: %v", clients)
	}
	servers := consoleQuery(t, con, "SHOW SERVERS")
	if len(servers) == 0 || servers[0]["user"] != appRole || servers[0]["state"] != "idle" {
		t.Fatalf("SHOW SERVERS: %v", servers)
	}
	stats := consoleQuery(t, con, "SHOW STATS")
	if len(stats) != 1 || stats[0]["total_xact_count"] == "0" {
		t.Fatalf("SHOW STATS: %v", stats)
	}
	tenants := consoleQuery(t, con, "SHOW TENANTS")
	if len(tenants) != 2 || tenants[0]["tenant"] != "acme" || tenants[0]["clients"] != "1" {
		t.Fatalf("SHOW TENANTS: %v", tenants)
	}
	if conf := consoleQuery(t, con, "SHOW CONFIG"); len(conf) == 0 || conf[0]["key"] != "pool_mode" {
		t.Fatalf("SHOW CONFIG: %v", conf)
	}
	if v := consoleQuery(t, con, "SHOW VERSION"); len(v) != 1 || v[0]["version"] != "tenantguard test" {
		t.Fatalf("SHOW VERSION: %v", v)
	}
	if _, err := con.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("SQL accepted by the console")
	}

	// PAUSE acme: its next transaction waits; globex is not held up.
	if _, err := con.Exec(ctx, "PAUSE acme"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		var one int
		done <- acme.QueryRow(ctx, "SELECT 1").Scan(&one)
	}()
	harness.Eventually(t, 10*time.Second, func() error {
		for _, c := range consoleQuery(t, con, "SHOW CLIENTS") {
			if c["user"] == "acme" && c["state"] == "waiting" {
				return nil
			}
		}
		return errors.New("acme's query is not waiting")
	})
	globex := p.connect(t, p.url("globex", globexSecret))
	if err := globex.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("globex while acme is paused: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("acme's query ran while paused: %v", err)
	default:
	}
	if r := consoleQuery(t, con, "SHOW TENANTS"); r[0]["paused"] != "on" {
		t.Fatalf("SHOW TENANTS while paused: %v", r)
	}
	if _, err := con.Exec(ctx, "RESUME acme"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("acme after RESUME: %v", err)
	}
	if _, err := con.Exec(ctx, "PAUSE nosuchtenant"); err == nil {
		t.Fatal("PAUSE of an unknown tenant accepted")
	}

	// psql, as PgBouncer users run it.
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Fatal("psql not found: install postgresql-client")
	}
	host, port, _ := strings.Cut(p.addr, ":")
	cmd := exec.CommandContext(ctx, psql, "-h", host, "-p", port, "-U", "tgadmin", "-d", "tenantguard", "-c", "SHOW POOLS")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+consolePassword, "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "cl_active") || !strings.Contains(string(out), "acme") {
		t.Fatalf("psql -d tenantguard -c 'SHOW POOLS': %v\n%s", err, out)
	}
}
