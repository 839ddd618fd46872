package compat

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgxTag marks the rows the pgx cases write, so parallel clients never
// count each other's rows.
const pgxTag = "compat-pgx"

func pgxVersion(*testing.T) string {
	return moduleVersion("github.com/jackc/pgx/v5")
}

// moduleVersion is the version of a Go module this test is built with, as
// go.mod requires it (a test binary carries no module list of its own).
func moduleVersion(path string) string {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "(unknown: " + err.Error() + ")"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == path {
			return f[1]
		}
	}
	return "(not in go.mod)"
}

var pgxCases = []goCase{
	{"connect_read", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		rows, err := c.Query(ctx, "SELECT tenant_id, item FROM public.orders ORDER BY id")
		if err != nil {
			return "", err
		}
		tenants, items := map[string]int{}, map[string]bool{}
		for rows.Next() {
			var tenant, item string
			if err := rows.Scan(&tenant, &item); err != nil {
				return "", err
			}
			tenants[tenant]++
			items[item] = true
		}
		if err := rows.Err(); err != nil {
			return "", err
		}
		if !items["anvil"] || !items["rocket skates"] || len(tenants) != 1 {
			return "", fmt.Errorf("acme's rows: items %v, tenants %v", items, tenants)
		}
		return fmt.Sprintf("%d rows, all acme's", tenants["acme"]), nil
	}},
	{"parameterized", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		// The extended protocol: Parse/Bind with a parameter, prepared
		// once, executed on whichever pooled server connection comes.
		if _, err := c.Prepare(ctx, "by_item", "SELECT amount::text FROM public.orders WHERE item = $1"); err != nil {
			return "", err
		}
		for i := 0; i < 3; i++ {
			var amount string
			if err := c.QueryRow(ctx, "by_item", "anvil").Scan(&amount); err != nil {
				return "", err
			}
			if amount != "120.00" {
				return "", fmt.Errorf("anvil costs %s, want 120.00", amount)
			}
		}
		return "prepared statement executed 3 times", nil
	}},
	{"transaction", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		for _, commit := range []bool{false, true} {
			tx, err := c.Begin(ctx)
			if err != nil {
				return "", err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO public.orders (tenant_id, item, amount) VALUES ('acme', $1, 1)", fmt.Sprintf("%s-tx-%v", pgxTag, commit)); err != nil {
				return "", err
			}
			if commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback(ctx)
			}
			if err != nil {
				return "", err
			}
		}
		var rolledBack, committed int
		if err := c.QueryRow(ctx, "SELECT count(*) FILTER (WHERE item = $1), count(*) FILTER (WHERE item = $2) FROM public.orders",
			pgxTag+"-tx-false", pgxTag+"-tx-true").Scan(&rolledBack, &committed); err != nil {
			return "", err
		}
		if _, err := c.Exec(ctx, "DELETE FROM public.orders WHERE item = $1", pgxTag+"-tx-true"); err != nil {
			return "", err
		}
		if rolledBack != 0 || committed != 1 {
			return "", fmt.Errorf("rolled back rows %d (want 0), committed rows %d (want 1)", rolledBack, committed)
		}
		return "rollback discarded, commit kept", nil
	}},
	{"error_recovery", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		var codes []string
		// A syntax error, then a statement the firewall refuses.
		for _, q := range []string{"SELEC 1", "SELECT set_config('tenantguard.binding', 'globex', false)"} {
			_, err := c.Exec(ctx, q)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				return "", fmt.Errorf("%s: want a PostgreSQL error, got %v", q, err)
			}
			codes = append(codes, pe.Code)
			var one int
			if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				return "", fmt.Errorf("after %s (%s): %w", q, pe.Code, err)
			}
		}
		if codes[0] != "42601" || codes[1] != "42501" {
			return "", fmt.Errorf("SQLSTATEs %v, want [42601 42501]", codes)
		}
		return "42601 and 42501, the session still usable after each", nil
	}},
	{"isolation_rows", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		var others, globex, hammock int
		if err := c.QueryRow(ctx, "SELECT count(*) FILTER (WHERE tenant_id <> 'acme'), count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE item = 'hammock') FROM public.orders", "globex").
			Scan(&others, &globex, &hammock); err != nil {
			return "", err
		}
		if others+globex+hammock != 0 {
			return "", fmt.Errorf("acme sees %d rows of other tenants, %d of globex, %d hammocks", others, globex, hammock)
		}
		return "no row of globex visible", nil
	}},
	{"isolation_update_delete", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		for _, q := range []string{
			"UPDATE public.orders SET amount = 0 WHERE tenant_id = 'globex'",
			"DELETE FROM public.orders WHERE item = 'doomsday device'",
		} {
			tag, err := c.Exec(ctx, q)
			if err != nil {
				return "", fmt.Errorf("%s: %w", q, err)
			}
			if tag.RowsAffected() != 0 {
				return "", fmt.Errorf("%s: %s", q, tag)
			}
		}
		// Handing one of acme's rows to globex fails the policy's WITH CHECK.
		_, err = c.Exec(ctx, "UPDATE public.orders SET tenant_id = 'globex' WHERE item = 'anvil'")
		if code := sqlState(err); code != "42501" {
			return "", fmt.Errorf("moving a row to globex: %v, want SQLSTATE 42501", err)
		}
		return "UPDATE 0, DELETE 0, moving a row to globex refused (42501)", nil
	}},
	{"startup_options", func(ctx context.Context, env map[string]string) (string, error) {
		cfg, err := pgx.ParseConfig(env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		// One setting as a startup parameter of its own, one in options.
		cfg.RuntimeParams["statement_timeout"] = "750"
		cfg.RuntimeParams["options"] = "-c lock_timeout=1500"
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		return checkTimeouts(ctx, c, "750ms", "1500ms")
	}},
	{"startup_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
		var refused []string
		for _, p := range []map[string]string{
			{"options": "-c tenantguard.binding=globex"},
			{"tenantguard.binding": "globex"},
			{"options": "-c row_security=off"},
			{"options": "-c session_authorization=postgres"},
		} {
			cfg, err := pgx.ParseConfig(env["TG_PG_URL_ACME"])
			if err != nil {
				return "", err
			}
			for k, v := range p {
				cfg.RuntimeParams[k] = v
			}
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err == nil {
				c.Close(ctx)
				return "", fmt.Errorf("startup with %v was accepted", p)
			}
			if code := sqlState(err); code != "42501" {
				return "", fmt.Errorf("startup with %v: %v, want SQLSTATE 42501", p, err)
			}
			refused = append(refused, fmt.Sprint(p))
		}
		return "refused (42501): " + strings.Join(refused, ", "), nil
	}},
	{"copy_from", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		defer c.Exec(context.WithoutCancel(ctx), "DELETE FROM public.orders WHERE item LIKE $1", pgxTag+"-copy-%")
		rows := [][]any{{pgxTag + "-copy-1", 1}, {pgxTag + "-copy-2", 2}, {pgxTag + "-copy-3", 3}}
		// pgx sends binary COPY data; the tenant column is left out.
		n, err := c.CopyFrom(ctx, pgx.Identifier{"public", "orders"}, []string{"item", "amount"}, pgx.CopyFromRows(rows))
		if err != nil {
			return "", err
		}
		return checkCopied(ctx, c, n, pgxTag+"-copy-%")
	}},
	{"copy_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		rows := [][]any{{"acme", pgxTag + "-cross-acme", 1}, {"globex", pgxTag + "-cross-globex", 2}}
		_, copyErr := c.CopyFrom(ctx, pgx.Identifier{"public", "orders"}, []string{"tenant_id", "item", "amount"}, pgx.CopyFromRows(rows))
		if copyErr == nil {
			return "", errors.New("COPY with a row for globex was accepted")
		}
		if err := noCopiedRows(ctx, c, env, pgxTag+"-cross-%"); err != nil {
			return "", err
		}
		return "refused: " + copyErr.Error(), nil
	}},
	{"listen_notify", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		for _, q := range []string{"LISTEN compat_pgx", "NOTIFY compat_pgx, 'a1'", "SELECT pg_notify('compat_pgx', 'a2')"} {
			if _, err := c.Exec(ctx, q); err != nil {
				return "", fmt.Errorf("%s: %w", q, err)
			}
		}
		var got []string
		for len(got) < 2 {
			n, err := c.WaitForNotification(ctx)
			if err != nil {
				return "", fmt.Errorf("after %v: %w", got, err)
			}
			got = append(got, n.Channel+":"+n.Payload)
		}
		if got[0] != "compat_pgx:a1" || got[1] != "compat_pgx:a2" {
			return "", fmt.Errorf("notifications %v, want [compat_pgx:a1 compat_pgx:a2]", got)
		}
		return "NOTIFY and pg_notify received on the channel as named", nil
	}},
	{"listen_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
		acme, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
		if err != nil {
			return "", err
		}
		defer acme.Close(ctx)
		if _, err := acme.Exec(ctx, "LISTEN compat_pgx_cross"); err != nil {
			if sqlState(err) == "42501" {
				return "LISTEN refused: " + err.Error(), nil
			}
			return "", err
		}
		globex, err := pgx.Connect(ctx, env["TG_PG_URL_GLOBEX"])
		if err != nil {
			return "", err
		}
		defer globex.Close(ctx)
		_, gerr := globex.Exec(ctx, "NOTIFY compat_pgx_cross, 'from globex'")
		// Notifications arrive in commit order: globex's, had it leaked,
		// would come before acme's own.
		if _, err := acme.Exec(ctx, "NOTIFY compat_pgx_cross, 'from acme'"); err != nil {
			return "", err
		}
		n, err := acme.WaitForNotification(ctx)
		if err != nil {
			return "", err
		}
		if n.Payload != "from acme" {
			return "", fmt.Errorf("acme got %q on %q first, want its own", n.Payload, n.Channel)
		}
		return fmt.Sprintf("acme got only its own notification (globex's NOTIFY: %v)", errOrOK(gerr)), nil
	}},
	{"globex_unaffected", func(ctx context.Context, env map[string]string) (string, error) {
		c, err := pgx.Connect(ctx, env["TG_PG_URL_GLOBEX"])
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		return checkGlobex(ctx, c, pgxTag)
	}},
}

// checkTimeouts checks the settings a client gave at startup, then that
// statement_timeout is really in force, then the settings again (they
// follow the client to whichever pooled server connection serves it).
func checkTimeouts(ctx context.Context, c *pgx.Conn, statement, lock string) (string, error) {
	show := func() error {
		var st, lt string
		if err := c.QueryRow(ctx, "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')").Scan(&st, &lt); err != nil {
			return err
		}
		if st != statement || lt != lock {
			return fmt.Errorf("statement_timeout %s, lock_timeout %s; want %s, %s", st, lt, statement, lock)
		}
		return nil
	}
	if err := show(); err != nil {
		return "", err
	}
	start := time.Now()
	_, err := c.Exec(ctx, "SELECT pg_sleep(5)")
	if code := sqlState(err); code != "57014" {
		return "", fmt.Errorf("pg_sleep(5): %v, want 57014 (statement timeout)", err)
	}
	took := time.Since(start).Round(10 * time.Millisecond)
	if err := show(); err != nil {
		return "", err
	}
	return fmt.Sprintf("statement_timeout %s, lock_timeout %s; pg_sleep(5) canceled after %v", statement, lock, took), nil
}

// checkCopied checks that COPY reported n == 3 rows and that they landed
// as acme's, the tenant column filled in.
func checkCopied(ctx context.Context, c *pgx.Conn, n int64, like string) (string, error) {
	var count int
	var tenants []string
	if err := c.QueryRow(ctx, "SELECT count(*), coalesce(array_agg(DISTINCT tenant_id), '{}') FROM public.orders WHERE item LIKE $1", like).Scan(&count, &tenants); err != nil {
		return "", err
	}
	if n != 3 || count != 3 || len(tenants) != 1 || tenants[0] != "acme" {
		return "", fmt.Errorf("COPY reported %d rows; %d rows found, tenants %v; want 3, 3, [acme]", n, count, tenants)
	}
	return "3 rows copied, tenant_id acme filled in", nil
}

// noCopiedRows checks that neither tenant sees a row of a refused COPY and
// that acme's session is still usable.
func noCopiedRows(ctx context.Context, acme *pgx.Conn, env map[string]string, like string) error {
	var n int
	if err := acme.QueryRow(ctx, "SELECT count(*) FROM public.orders WHERE item LIKE $1", like).Scan(&n); err != nil {
		return fmt.Errorf("acme's session after the refused COPY: %w", err)
	}
	if n != 0 {
		return fmt.Errorf("acme sees %d rows of the refused COPY", n)
	}
	g, err := pgx.Connect(ctx, env["TG_PG_URL_GLOBEX"])
	if err != nil {
		return err
	}
	defer g.Close(ctx)
	if err := g.QueryRow(ctx, "SELECT count(*) FROM public.orders WHERE item LIKE $1", like).Scan(&n); err != nil {
		return err
	}
	if n != 0 {
		return fmt.Errorf("globex got %d rows from acme's COPY", n)
	}
	return nil
}

// checkGlobex checks, as globex, that its seed rows are intact, that it sees
// no row of acme, and none that a cross-tenant attempt tagged tag wrote.
func checkGlobex(ctx context.Context, c *pgx.Conn, tag string) (string, error) {
	var hammock, device string
	var acme, tagged int
	if err := c.QueryRow(ctx, `SELECT
		(SELECT amount::text FROM public.orders WHERE item = 'hammock'),
		(SELECT amount::text FROM public.orders WHERE item = 'doomsday device'),
		(SELECT count(*) FROM public.orders WHERE tenant_id <> 'globex'),
		(SELECT count(*) FROM public.orders WHERE item LIKE $1)`, tag+"%").Scan(&hammock, &device, &acme, &tagged); err != nil {
		return "", err
	}
	if hammock != "40.00" || device != "999.99" || acme != 0 || tagged != 0 {
		return "", fmt.Errorf("globex sees hammock %s, doomsday device %s (want 40.00, 999.99), %d rows of others, %d rows tagged %s", hammock, device, acme, tagged, tag)
	}
	return "globex's rows intact; none of acme's visible", nil
}

// sqlState is the SQLSTATE of a PostgreSQL error, or "".
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func errOrOK(err error) string {
	if err == nil {
		return "accepted"
	}
	return err.Error()
}
