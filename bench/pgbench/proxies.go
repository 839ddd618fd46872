package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

// pgbouncerConf is the PgBouncer configuration; %d are the PostgreSQL port,
// the listen port and the pool size, %s the auth file and extra settings.
const pgbouncerConf = `[databases]
` + dbName + ` = host=127.0.0.1 port=%d dbname=` + dbName + ` user=` + dbUser + ` password=` + dbPassword + `

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
pool_mode = transaction
default_pool_size = %d
max_client_conn = 200
auth_type = scram-sha-256
auth_file = %s
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
%s`

// pgbouncerBin is the Debian package's PgBouncer.
const pgbouncerBin = "/usr/sbin/pgbouncer"

// tgTenant is one tenant in a tenantguard configuration.
type tgTenant struct {
	id, password     string
	maxTransactions  int           // limits.max_transactions; 0 = none
	statementTimeout time.Duration // limits.statement_timeout; 0 = none
}

// tgOptions describe one tenantguard process.
type tgOptions struct {
	name           string // for logs and reports
	user, password string // upstream role
	poolSize       int
	waitTimeout    time.Duration // postgres.pool.wait_timeout; 0 = tenantguard's default
	isolation      bool          // row isolation of isoTables, bootstrapped before start
	tenants        []tgTenant    // the first one is used to check readiness
	pprof          bool          // serve /debug/pprof/ on the admin listener
	pgCache        string        // a pg_cache section (YAML, at top level), "" for none
}

// tenantguardConfig renders the sidecar configuration.
func tenantguardConfig(o tgOptions, port, admin, pgPort int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  postgres: \"127.0.0.1:%d\"\n  admin: \"127.0.0.1:%d\"\n", port, admin)
	fmt.Fprintf(&b, "postgres:\n  databases:\n    - name: %s\n      url: \"postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable\"\n",
		dbName, o.user, o.password, pgPort, dbName)
	fmt.Fprintf(&b, "  pool:\n    mode: transaction\n    size: %d\n    max_prepared_statements: 200\n", o.poolSize)
	if o.waitTimeout > 0 {
		fmt.Fprintf(&b, "    wait_timeout: %s\n", o.waitTimeout)
	}
	if o.isolation {
		fmt.Fprintf(&b, "isolation:\n  binding_key: %q\n  tables:\n", bindingKey)
		for _, t := range isoTables {
			fmt.Fprintf(&b, "    - name: public.%s\n      tenant_column: %s\n", t, tenantColumn)
		}
	}
	b.WriteString("tenants:\n")
	for _, t := range o.tenants {
		fmt.Fprintf(&b, "  - id: %s\n    passwords: [%q]\n", t.id, t.password)
		if t.maxTransactions > 0 || t.statementTimeout > 0 {
			b.WriteString("    limits:\n")
			if t.maxTransactions > 0 {
				fmt.Fprintf(&b, "      max_transactions: %d\n", t.maxTransactions)
			}
			if t.statementTimeout > 0 {
				fmt.Fprintf(&b, "      statement_timeout: %s\n", t.statementTimeout)
			}
		}
	}
	b.WriteString(o.pgCache)
	b.WriteString("drain_timeout: 5s\n")
	if o.pprof {
		b.WriteString("debug:\n  pprof: true\n")
	}
	return b.String()
}

// startTenantguard runs `tenantguard sidecar` in front of pg's database
// bench. With isolation on it first runs `tenantguard pg bootstrap` with the
// same configuration, as the superuser.
func startTenantguard(ctx context.Context, bin string, pg *pgcluster.Cluster, o tgOptions) (*service, error) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, fmt.Errorf("tenantguard binary path: %w", err)
	}
	s, err := newService(o.name)
	if err != nil {
		return nil, err
	}
	s.user, s.password = o.tenants[0].id, o.tenants[0].password
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return nil, s.Discard(err)
	}
	s.adminPort, s.port = ports[0], ports[1]
	conf := filepath.Join(s.Dir, "tenantguard.yaml")
	if err := os.WriteFile(conf, []byte(tenantguardConfig(o, s.port, s.adminPort, pg.Port())), 0o600); err != nil {
		return nil, s.Discard(fmt.Errorf("%s: write config: %w", o.name, err))
	}
	if o.isolation {
		cmd := exec.CommandContext(ctx, bin, "pg", "bootstrap", "--config", conf, "--admin-url", pg.AdminURL(dbName))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, s.Discard(fmt.Errorf("%s: %s: %w\n%s", o.name, strings.Join(cmd.Args, " "), err, out))
		}
		benchkit.Logf("%s: tenantguard pg bootstrap: %s", o.name, strings.TrimSpace(string(out)))
	}
	// Log warnings and errors only, as PgBouncer logs no connections below.
	if err := s.start(ctx, bin, "sidecar", "--config", conf, "--log-level", "warn"); err != nil {
		return nil, err
	}
	return s, nil
}

// pgbouncer is a running PgBouncer and what its version supports.
type pgbouncer struct {
	*service
	version    string
	preparedOK bool // max_prepared_statements exists (1.21+)
}

// startPgBouncer runs PgBouncer in front of PostgreSQL on pgPort. PgBouncer
// refuses to run as root, so then it runs as the postgres user.
func startPgBouncer(ctx context.Context, pgPort int) (*pgbouncer, error) {
	version, major, minor, err := pgbouncerVersion()
	if err != nil {
		return nil, err
	}
	p := &pgbouncer{version: version, preparedOK: major > 1 || major == 1 && minor >= 21}
	if p.service, err = newService("pgbouncer"); err != nil {
		return nil, err
	}
	p.user, p.password = tenantID, tenantPass
	if p.port, err = pgcluster.FreePort(); err != nil {
		return nil, p.Discard(err)
	}
	cred, err := unprivileged()
	if err != nil {
		return nil, p.Discard(err)
	}
	users := filepath.Join(p.Dir, "users.txt")
	conf := filepath.Join(p.Dir, "pgbouncer.ini")
	extra := ""
	if p.preparedOK {
		extra = "max_prepared_statements = 200\n"
	}
	files := map[string]string{
		users: fmt.Sprintf("%q %q\n", tenantID, tenantPass),
		conf:  fmt.Sprintf(pgbouncerConf, pgPort, p.port, poolSize, users, extra),
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return nil, p.Discard(fmt.Errorf("pgbouncer: write %s: %w", path, err))
		}
	}
	if cred != nil {
		for _, path := range []string{p.Dir, users, conf} {
			if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, p.Discard(fmt.Errorf("pgbouncer: chown %s: %w", path, err))
			}
		}
	}
	p.Cred = cred
	if err := p.start(ctx, pgbouncerBin, conf); err != nil {
		return nil, err
	}
	return p, nil
}

// pgbouncerVersion runs `pgbouncer --version`.
func pgbouncerVersion() (version string, major, minor int, err error) {
	out, err := exec.Command(pgbouncerBin, "--version").Output()
	if err != nil {
		return "", 0, 0, fmt.Errorf("%s --version (install the pgbouncer package): %w", pgbouncerBin, err)
	}
	m := regexp.MustCompile(`PgBouncer (\d+)\.(\d+)(\.\d+)?`).FindSubmatch(out)
	if m == nil {
		return "", 0, 0, fmt.Errorf("pgbouncer: cannot parse version from %q", out)
	}
	major, _ = strconv.Atoi(string(m[1]))
	minor, _ = strconv.Atoi(string(m[2]))
	return string(m[0][len("PgBouncer "):]), major, minor, nil
}

// unprivileged returns nil unless running as root, where it returns the
// postgres user's credentials.
func unprivileged() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: running as root needs a postgres user to run as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgbouncer: bad uid/gid %s/%s for postgres", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// startLoop builds and runs bench/pgloop in mode (loop or goroutines) in
// front of PostgreSQL on pgPort.
func startLoop(ctx context.Context, pgPort int, mode string) (*service, error) {
	s, err := newService("go-" + mode)
	if err != nil {
		return nil, err
	}
	s.user, s.password = tenantID, tenantPass
	if s.port, err = pgcluster.FreePort(); err != nil {
		return nil, s.Discard(err)
	}
	bin := filepath.Join(s.Dir, "pgloop")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./bench/pgloop").CombinedOutput(); err != nil {
		return nil, s.Discard(fmt.Errorf("go build ./bench/pgloop: %w\n%s", err, out))
	}
	upstream := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", dbUser, dbPassword, pgPort, dbName)
	if err := s.start(ctx, bin, "-listen", benchkit.LocalAddr(s.port), "-upstream", upstream, "-pool", strconv.Itoa(poolSize), "-mode", mode); err != nil {
		return nil, err
	}
	return s, nil
}
