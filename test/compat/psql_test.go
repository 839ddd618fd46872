package compat

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func psqlVersion(t *testing.T) string {
	psql := lookPath(t, "psql", "postgresql-client")
	out, err := exec.Command(psql, "--version").Output()
	if err != nil {
		t.Fatalf("psql --version: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// psql runs a script through psql -f - as the tenant of urlKey and returns
// everything it printed. Output is unaligned, tuples only, command tags
// shown, errors with their SQLSTATE; ON_ERROR_STOP is off, so the script
// goes on after an error in the same session, as an interactive user's
// would.
func psql(ctx context.Context, env map[string]string, urlKey string, extraEnv []string, script string) (string, error) {
	return commandOutput(ctx, extraEnv, script, "psql", "-X", "-At", "-v", "VERBOSITY=verbose", "-d", env[urlKey], "-f", "-")
}

// lines splits psql's output into trimmed lines.
func lines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		ls = append(ls, strings.TrimSpace(l))
	}
	return ls
}

// expectLines checks that out holds every wanted line, in order.
func expectLines(out string, want ...string) error {
	got := lines(out)
	i := 0
	for _, l := range got {
		if i < len(want) && l == want[i] {
			i++
		}
	}
	if i < len(want) {
		return fmt.Errorf("missing line %q in psql's output:\n%s", want[i], out)
	}
	return nil
}

var psqlCases = []goCase{
	{"connect_read", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := psql(ctx, env, "TG_PG_URL_ACME", nil, "SELECT tenant_id || '|' || item FROM public.orders ORDER BY id;\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		n := 0
		for _, l := range lines(out) {
			if l == "" {
				continue
			}
			if !strings.HasPrefix(l, "acme|") {
				return "", fmt.Errorf("acme reads %q", l)
			}
			n++
		}
		if err := expectLines(out, "acme|anvil", "acme|rocket skates"); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d rows, all acme's", n), nil
	}},
	{"transaction", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := psql(ctx, env, "TG_PG_URL_ACME", nil, `
BEGIN;
INSERT INTO public.orders (tenant_id, item, amount) VALUES ('acme', 'compat-psql-tx-rolled-back', 1);
ROLLBACK;
BEGIN;
INSERT INTO public.orders (tenant_id, item, amount) VALUES ('acme', 'compat-psql-tx-committed', 1);
COMMIT;
SELECT 'found ' || count(*) FILTER (WHERE item = 'compat-psql-tx-rolled-back') || ' ' || count(*) FILTER (WHERE item = 'compat-psql-tx-committed') FROM public.orders;
DELETE FROM public.orders WHERE item = 'compat-psql-tx-committed';
`)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if err := expectLines(out, "BEGIN", "INSERT 0 1", "ROLLBACK", "BEGIN", "INSERT 0 1", "COMMIT", "found 0 1", "DELETE 1"); err != nil {
			return "", err
		}
		return "rollback discarded, commit kept", nil
	}},
	{"error_recovery", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := psql(ctx, env, "TG_PG_URL_ACME", nil, `
SELEC 1;
SELECT 'usable after a syntax error';
SELECT set_config('tenantguard.binding', 'globex', false);
SELECT 'usable after a refusal';
`)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "ERROR:  42601") || !strings.Contains(out, "ERROR:  42501") {
			return "", fmt.Errorf("want errors 42601 and 42501 in:\n%s", out)
		}
		if err := expectLines(out, "usable after a syntax error", "usable after a refusal"); err != nil {
			return "", err
		}
		return "42601 and 42501, the session still usable after each", nil
	}},
	{"isolation_rows", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := psql(ctx, env, "TG_PG_URL_ACME", nil,
			"SELECT 'others ' || count(*) FILTER (WHERE tenant_id <> 'acme') || ' hammocks ' || count(*) FILTER (WHERE item = 'hammock') FROM public.orders;\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if err := expectLines(out, "others 0 hammocks 0"); err != nil {
			return "", err
		}
		return "no row of globex visible", nil
	}},
	{"isolation_update_delete", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := psql(ctx, env, "TG_PG_URL_ACME", nil, `
UPDATE public.orders SET amount = 0 WHERE tenant_id = 'globex';
DELETE FROM public.orders WHERE item = 'doomsday device';
UPDATE public.orders SET tenant_id = 'globex' WHERE item = 'anvil';
`)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if err := expectLines(out, "UPDATE 0", "DELETE 0"); err != nil {
			return "", err
		}
		if !strings.Contains(out, "ERROR:  42501") {
			return "", fmt.Errorf("moving a row to globex was not refused with 42501:\n%s", out)
		}
		return "UPDATE 0, DELETE 0, moving a row to globex refused (42501)", nil
	}},
	{"startup_options", func(ctx context.Context, env map[string]string) (string, error) {
		script := `
SELECT current_setting('statement_timeout') || ' ' || current_setting('lock_timeout');
SELECT pg_sleep(5);
SELECT current_setting('statement_timeout') || ' ' || current_setting('lock_timeout');
`
		out, err := psql(ctx, env, "TG_PG_URL_ACME", []string{"PGOPTIONS=-c statement_timeout=750 -c lock_timeout=1500"}, script)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "ERROR:  57014") {
			return "", fmt.Errorf("pg_sleep(5) was not canceled by statement_timeout:\n%s", out)
		}
		if err := expectLines(out, "750ms 1500ms", "750ms 1500ms"); err != nil {
			return "", err
		}
		return "PGOPTIONS statement_timeout 750ms and lock_timeout 1500ms in force, pg_sleep(5) canceled", nil
	}},
	{"startup_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
		var refused []string
		for _, opts := range []string{"-c tenantguard.binding=globex", "-c row_security=off", "-c session_authorization=postgres"} {
			out, err := psql(ctx, env, "TG_PG_URL_ACME", []string{"PGOPTIONS=" + opts}, "SELECT 'connected';\n")
			var exit *exec.ExitError
			if !errors.As(err, &exit) || !strings.Contains(out, "FATAL") {
				return "", fmt.Errorf("PGOPTIONS=%q: %v:\n%s", opts, err, out)
			}
			refused = append(refused, opts)
		}
		return "FATAL for PGOPTIONS " + strings.Join(refused, ", "), nil
	}},
	{"copy_from", func(ctx context.Context, env map[string]string) (string, error) {
		rows, err := dataFile("compat-psql-copy-1\t1\ncompat-psql-copy-2\t2\ncompat-psql-copy-3\t3\n")
		if err != nil {
			return "", err
		}
		defer os.Remove(rows)
		out, err := psql(ctx, env, "TG_PG_URL_ACME", nil, `
\copy public.orders (item, amount) from '`+rows+`'
SELECT 'copied ' || count(*) || ' ' || string_agg(DISTINCT tenant_id, ',') FROM public.orders WHERE item LIKE 'compat-psql-copy-%';
DELETE FROM public.orders WHERE item LIKE 'compat-psql-copy-%';
`)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if err := expectLines(out, "COPY 3", "copied 3 acme"); err != nil {
			return "", err
		}
		return "\\copy of 3 rows, tenant_id acme filled in", nil
	}},
	{"copy_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
		rows, err := dataFile("acme\tcompat-psql-cross-acme\t1\nglobex\tcompat-psql-cross-globex\t2\n")
		if err != nil {
			return "", err
		}
		defer os.Remove(rows)
		out, err := psql(ctx, env, "TG_PG_URL_ACME", nil, `
\copy public.orders (tenant_id, item, amount) from '`+rows+`'
SELECT 'acme sees ' || count(*) FROM public.orders WHERE item LIKE 'compat-psql-cross-%';
`)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "ERROR:") || strings.Contains(out, "COPY 2") {
			return "", fmt.Errorf("COPY with a row for globex was not refused:\n%s", out)
		}
		if err := expectLines(out, "acme sees 0"); err != nil {
			return "", err
		}
		g, err := psql(ctx, env, "TG_PG_URL_GLOBEX", nil, "SELECT 'globex sees ' || count(*) FROM public.orders WHERE item LIKE 'compat-psql-cross-%';\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, g)
		}
		if err := expectLines(g, "globex sees 0"); err != nil {
			return "", err
		}
		return "refused: " + firstLine(out, "ERROR:"), nil
	}},
	{"listen_notify", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := psql(ctx, env, "TG_PG_URL_ACME", nil, `
LISTEN compat_psql;
NOTIFY compat_psql, 'a1';
SELECT pg_notify('compat_psql', 'a2');
`)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		for _, p := range []string{"a1", "a2"} {
			if !strings.Contains(out, fmt.Sprintf(`Asynchronous notification "compat_psql" with payload %q received`, p)) {
				return "", fmt.Errorf("no notification %q:\n%s", p, out)
			}
		}
		return "NOTIFY and pg_notify received on the channel as named", nil
	}},
	{"listen_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
		// \! runs globex's NOTIFY between acme's LISTEN and acme's own NOTIFY.
		out, err := psql(ctx, env, "TG_PG_URL_ACME", []string{"TG_PG_URL_GLOBEX=" + env["TG_PG_URL_GLOBEX"]}, `
LISTEN compat_psql_cross;
\! psql -X -q -d "$TG_PG_URL_GLOBEX" -c "NOTIFY compat_psql_cross, 'from globex'"
NOTIFY compat_psql_cross, 'from acme';
`)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if strings.Contains(out, `with payload "from globex"`) {
			return "", fmt.Errorf("acme got globex's notification:\n%s", out)
		}
		if first := firstLine(out, ""); strings.Contains(first, "ERROR:  42501") {
			return "LISTEN refused: " + first, nil
		}
		if !strings.Contains(out, `with payload "from acme"`) {
			return "", fmt.Errorf("acme did not get its own notification:\n%s", out)
		}
		return "acme got only its own notification", nil
	}},
	{"globex_unaffected", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := psql(ctx, env, "TG_PG_URL_GLOBEX", nil, `
SELECT (SELECT amount FROM public.orders WHERE item = 'hammock') || ' ' ||
       (SELECT amount FROM public.orders WHERE item = 'doomsday device') || ' ' ||
       (SELECT count(*) FROM public.orders WHERE tenant_id <> 'globex' OR item LIKE 'compat-psql%');
`)
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if err := expectLines(out, "40.00 999.99 0"); err != nil {
			return "", err
		}
		return "globex's rows intact; none of acme's visible", nil
	}},
}

// dataFile writes rows for \copy to a temporary file and returns its name.
// \copy reads a file on the client and sends it as COPY FROM STDIN; rows
// inline after "\copy … from stdin" would be run as SQL if the server
// refused the COPY before reading them.
func dataFile(rows string) (string, error) {
	f, err := os.CreateTemp("", "compat-psql-*.tsv")
	if err != nil {
		return "", err
	}
	_, err = f.WriteString(rows)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return f.Name(), err
}

// firstLine returns the first non-empty line of out that contains s.
func firstLine(out, s string) string {
	for _, l := range lines(out) {
		if l != "" && strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
