// Package demo runs tenantguard's embedded default: a throwaway PostgreSQL
// seeded with two tenants, and a sidecar in front of it, all on 127.0.0.1.
// It writes the connection settings to a dotenv file once everything is ready.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/controlplanesvc"
	"github.com/tenantguard/tenantguard/internal/extauthzsvc"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
	"github.com/tenantguard/tenantguard/internal/sidecar"
)

// Options configure the demo.
type Options struct {
	EnvFile        string // dotenv file to write
	PostgresURL    string // superuser URL of an existing PostgreSQL; "" starts one
	RedisURL       string // URL of an existing redis-server; "" starts one
	Listen         string // sidecar PostgreSQL listen address
	RedisListen    string // sidecar Redis listen address
	AdminListen    string // sidecar admin listen address
	AuthzListen    string // ext_authz gRPC listen address
	APIListen      string // session HTTP API listen address
	XDSListen      string // control plane xDS listen address
	AdminAPIListen string // control plane admin API listen address
	Logger         *slog.Logger
	Out            io.Writer // where the how-to-connect text goes
}

// Tenants are the demo's tenants.
var Tenants = []string{"acme", "globex"}

const (
	appDatabase = "app"
	appRole     = "tg_app"
)

// Run starts everything, writes the env file, and blocks until ctx ends;
// then it stops everything and removes its temporary directories.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.AuthzListen == "" {
		o.AuthzListen = "127.0.0.1:0"
	}
	if o.APIListen == "" {
		o.APIListen = "127.0.0.1:0"
	}
	adminURL := o.PostgresURL
	if adminURL == "" {
		cl, err := pgcluster.Start(ctx, pgcluster.Options{Logger: log})
		if err != nil {
			return fmt.Errorf("start postgres: %w", err)
		}
		defer cl.Close()
		adminURL = cl.AdminURL("postgres")
		log.Info("started throwaway postgres", "port", cl.Port(), "dir", cl.Dir())
	}
	redisAddr, redisAdminURL := "", o.RedisURL
	if o.RedisURL == "" {
		rs, err := redisserver.Start(ctx, redisserver.Options{Logger: log})
		if err != nil {
			return fmt.Errorf("start redis: %w", err)
		}
		defer rs.Close()
		redisAddr, redisAdminURL = rs.Addr(), "redis://"+rs.Addr()+"/0"
	} else {
		u, err := url.Parse(o.RedisURL)
		if err != nil {
			return fmt.Errorf("--redis-url: %w", err)
		}
		redisAddr = u.Host
	}
	appAdminURL, err := withDatabase(adminURL, appDatabase)
	if err != nil {
		return err
	}
	rolePassword := secret()
	if err := seed(ctx, adminURL, appAdminURL, rolePassword); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	upstream, err := withUser(appAdminURL, appRole, rolePassword)
	if err != nil {
		return err
	}
	passwords := map[string]string{}
	bindingKey := secret() + secret()
	var yml strings.Builder
	fmt.Fprintf(&yml, "listen:\n  postgres: %q\n  redis: %q\n  admin: %q\n", o.Listen, o.RedisListen, o.AdminListen)
	fmt.Fprintf(&yml, "redis:\n  upstream: %q\n  emulate: [flushdb, flushall, dbsize]\n", redisAddr)
	fmt.Fprintf(&yml, "postgres:\n  databases:\n    - name: %s\n      url: %q\n", appDatabase, upstream)
	fmt.Fprintf(&yml, "  pool:\n    mode: transaction\n    size: 20\n")
	fmt.Fprintf(&yml, "isolation:\n  binding_key: %q\n  tables:\n    - name: public.orders\n      tenant_column: tenant_id\n", bindingKey)
	// The tenants live in the control plane's policy, seeded on its first
	// start; the sidecar and ext_authz take them from it over xDS.
	var seedYAML strings.Builder
	fmt.Fprintf(&seedYAML, "name: default\ntables:\n  - name: public.orders\n    tenant_column: tenant_id\ntenants:\n")
	for _, t := range Tenants {
		passwords[t] = secret()
		fmt.Fprintf(&seedYAML, "  - id: %s\n    credentials: [%q]\n", t, passwords[t])
	}
	// Session tokens: a fresh key pair in a temp dir; the session store is
	// database 1 of the same redis-server (tenants' keys live in 0).
	keyDir, err := os.MkdirTemp("", "tenantguard-demo-keys-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(keyDir)
	signing, verify, err := writeKeys(keyDir)
	if err != nil {
		return err
	}
	seedPath := filepath.Join(keyDir, "policy.yaml")
	if err := os.WriteFile(seedPath, []byte(seedYAML.String()), 0o600); err != nil {
		return err
	}
	cpURL, err := controlPlaneDatabase(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("control plane database: %w", err)
	}
	adminToken, xdsToken := secret()+secret(), secret()+secret()
	if o.XDSListen == "" {
		o.XDSListen = "127.0.0.1:0"
	}
	if o.AdminAPIListen == "" {
		o.AdminAPIListen = "127.0.0.1:0"
	}
	// A throwaway audit signing key: the demo's audit trail is signed, as
	// a production one should be.
	auditKey, err := auditkey.Generate()
	if err != nil {
		return err
	}
	auditKeyPath := filepath.Join(keyDir, "audit.key")
	if err := os.WriteFile(auditKeyPath, auditKey.MarshalPEM(), 0o600); err != nil {
		return err
	}
	ccfg, err := config.ParseControlPlane(filepath.Join(keyDir, "controlplane.yaml"), []byte(fmt.Sprintf(
		"listen:\n  xds: %q\n  admin: %q\ndatabase: %q\nadmin_token: %q\nxds_token: %q\nseed: %q\naudit_key_file: %q\naudit_signed_from: 1\n",
		o.XDSListen, o.AdminAPIListen, cpURL, adminToken, xdsToken, seedPath, auditKeyPath)))
	if err != nil {
		return err
	}
	cp, err := controlplanesvc.Start(ctx, ccfg, log.With("service", "controlplane"))
	if err != nil {
		return err
	}
	cpDone := make(chan error, 1)
	cpCtx, stopCP := context.WithCancel(context.Background())
	go func() { cpDone <- cp.Run(cpCtx) }()
	defer func() { stopCP(); <-cpDone }()

	storeURL := "redis://" + redisAddr + "/1"
	fmt.Fprintf(&yml, "sessions:\n  store: %q\n  verification_keys: [%q]\n", storeURL, verify)
	fmt.Fprintf(&yml, "controlplane:\n  address: %q\n  node_id: demo-sidecar\n  cache_file: %q\n  token: %q\n", cp.XDSAddr(), filepath.Join(keyDir, "sidecar-policy.json"), xdsToken)
	cfg, err := config.Parse("demo", []byte(yml.String()))
	if err != nil {
		return err
	}
	var ayml strings.Builder
	fmt.Fprintf(&ayml, "listen:\n  grpc: %q\n  http: %q\nadmin_token: %q\n", o.AuthzListen, o.APIListen, adminToken)
	fmt.Fprintf(&ayml, "sessions:\n  store: %q\n  signing_key: %q\n  ttl: 15m\n  max_age: 12h\n", storeURL, signing)
	fmt.Fprintf(&ayml, "controlplane:\n  address: %q\n  node_id: demo-extauthz\n  cache_file: %q\n  token: %q\n", cp.XDSAddr(), filepath.Join(keyDir, "extauthz-policy.json"), xdsToken)
	acfg, err := config.ParseExtAuthz(filepath.Join(keyDir, "extauthz.yaml"), []byte(ayml.String()))
	if err != nil {
		return err
	}
	// Install row-level isolation as the table owner; the sidecar then
	// checks it and refuses to serve if anything is missing.
	if err := sidecar.Bootstrap(ctx, cfg, adminURL, io.Discard); err != nil {
		return fmt.Errorf("pg bootstrap: %w", err)
	}
	sc, err := sidecar.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	az, err := extauthzsvc.Start(ctx, acfg, log.With("service", "extauthz"))
	if err != nil {
		_ = sc.Run(canceled())
		return err
	}
	env := map[string]string{
		"TG_PG_ADMIN_URL":      appAdminURL,
		"TG_REDIS_ADMIN_URL":   redisAdminURL,
		"TG_METRICS_URL":       "http://" + sc.AdminAddr() + "/metrics",
		"TG_EXTAUTHZ_ADDR":     az.GRPCAddr(),
		"TG_SESSION_API":       "http://" + az.HTTPAddr(),
		"TG_ADMIN_TOKEN":       adminToken,
		"TG_CONTROLPLANE_ADDR": cp.XDSAddr(),
		"TG_ADMIN_API":         "http://" + cp.AdminAddr(),
	}
	for _, t := range Tenants {
		u := url.URL{Scheme: "postgres", User: url.UserPassword(t, passwords[t]), Host: sc.PostgresAddr(), Path: "/" + appDatabase, RawQuery: "sslmode=disable"}
		env["TG_PG_URL_"+strings.ToUpper(t)] = u.String()
		r := url.URL{Scheme: "redis", User: url.UserPassword(t, passwords[t]), Host: sc.RedisAddr(), Path: "/0"}
		env["TG_REDIS_URL_"+strings.ToUpper(t)] = r.String()
	}
	runErr := make(chan error, 2)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { runErr <- sc.Run(rctx) }()
	go func() { runErr <- az.Run(rctx) }()
	stop := func() error {
		cancel()
		return errors.Join(<-runErr, <-runErr)
	}
	select {
	case <-sc.PolicyReady():
	case <-ctx.Done():
		_ = stop()
		return ctx.Err()
	}
	if err := seedRedis(ctx, sc.RedisAddr(), passwords); err != nil {
		_ = stop()
		return fmt.Errorf("seed redis: %w", err)
	}
	if err := writeEnv(o.EnvFile, env); err != nil {
		_ = stop()
		return err
	}
	if o.Out != nil {
		fmt.Fprintf(o.Out, "tenantguard demo is running. Connection settings are in %s:\n\n", o.EnvFile)
		for _, k := range sortedKeys(env) {
			fmt.Fprintf(o.Out, "  %s=%s\n", k, env[k])
		}
		fmt.Fprintf(o.Out, "\nTry:  psql \"$TG_PG_URL_ACME\" -c 'select * from orders'\n      redis-cli -u \"$TG_REDIS_URL_ACME\" get greeting\n")
		fmt.Fprintf(o.Out, "A session token instead of the static password:\n"+
			"      curl -s -H \"Authorization: Bearer $TG_ADMIN_TOKEN\" -d '{\"tenant_id\":\"acme\",\"user_id\":\"alice\"}' $TG_SESSION_API/v1/sessions\n"+
			"      PGPASSWORD=<token> psql \"host=127.0.0.1 port=%s user=acme dbname=app\"\n"+
			"The policy, from the control plane:\n"+
			"      curl -s -H \"Authorization: Bearer $TG_ADMIN_TOKEN\" $TG_ADMIN_API/v1/policy\n"+
			"      curl -s -X POST -H \"Authorization: Bearer $TG_ADMIN_TOKEN\" $TG_ADMIN_API/v1/tenants/acme/suspend\n"+
			"Stop with Ctrl-C.\n", portOf(sc.PostgresAddr()))
	}
	// Either service ending (ctx done, or a failure) stops the other.
	err = <-runErr
	cancel()
	err = errors.Join(err, <-runErr)
	_ = os.Remove(o.EnvFile)
	return err
}

// controlPlaneDatabase creates the control plane's database (idempotent)
// and returns its URL.
func controlPlaneDatabase(ctx context.Context, adminURL string) (string, error) {
	c, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tenantguard')").Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := c.Exec(ctx, "CREATE DATABASE tenantguard"); err != nil {
			return "", err
		}
	}
	return withDatabase(adminURL, "tenantguard")
}

// writeKeys writes a token signing key and its verification key.
func writeKeys(dir string) (signing, verify string, err error) {
	k, err := token.GenerateKey("demo-1")
	if err != nil {
		return "", "", err
	}
	signing, verify = filepath.Join(dir, "demo-1.key.pem"), filepath.Join(dir, "demo-1.pub.pem")
	if err := os.WriteFile(signing, k.MarshalPEM(), 0o600); err != nil {
		return "", "", err
	}
	return signing, verify, os.WriteFile(verify, k.Public().MarshalPEM(), 0o644)
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// seed creates the app database, the upstream role the sidecar uses, and
// public.orders with rows for both tenants. It is idempotent.
func seed(ctx context.Context, adminURL, appAdminURL, rolePassword string) error {
	c, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", appDatabase).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{appDatabase}.Sanitize()); err != nil {
			return err
		}
	}
	// The role is neither superuser nor BYPASSRLS and owns nothing.
	if _, err := c.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN
    CREATE ROLE %s LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END $$`, appRole, appRole)); err != nil {
		return err
	}
	var lit string
	if err := c.QueryRow(ctx, "SELECT quote_literal($1)", rolePassword).Scan(&lit); err != nil {
		return err
	}
	if _, err := c.Exec(ctx, "ALTER ROLE "+appRole+" PASSWORD "+lit); err != nil {
		return err
	}
	a, err := pgx.Connect(ctx, appAdminURL)
	if err != nil {
		return err
	}
	defer a.Close(ctx)
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS public.orders (
			id bigserial PRIMARY KEY,
			tenant_id text NOT NULL,
			item text NOT NULL,
			amount numeric NOT NULL DEFAULT 0)`,
		`INSERT INTO public.orders (tenant_id, item, amount)
		 SELECT * FROM (VALUES ('acme', 'anvil', 120.00), ('acme', 'rocket skates', 75.50),
		                       ('globex', 'hammock', 40.00), ('globex', 'doomsday device', 999.99)) v
		 WHERE NOT EXISTS (SELECT 1 FROM public.orders)`,
	} {
		if _, err := a.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// seedRedis stores a few keys for each tenant, through the sidecar, so
// they land in the tenant's namespace.
func seedRedis(ctx context.Context, addr string, passwords map[string]string) error {
	for _, t := range Tenants {
		c := goredis.NewClient(&goredis.Options{Addr: addr, Username: t, Password: passwords[t], DisableIdentity: true})
		err := c.MSet(ctx, "greeting", "hello from "+t, "plan", map[string]string{"acme": "pro", "globex": "basic"}[t]).Err()
		if err == nil {
			err = c.RPush(ctx, "orders:recent", t+"-1001", t+"-1002").Err()
		}
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// writeEnv writes KEY=value lines atomically: a temp file, then rename.
func writeEnv(path string, env map[string]string) error {
	var b strings.Builder
	for _, k := range sortedKeys(env) {
		fmt.Fprintf(&b, "%s=%s\n", k, env[k])
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tenantguard-env-*")
	if err != nil {
		return fmt.Errorf("env file: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("env file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("env file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("env file: %w", err)
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func secret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func withDatabase(raw, db string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("postgres url: %w", err)
	}
	u.Path = "/" + db
	return u.String(), nil
}

func withUser(raw, user, password string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("postgres url: %w", err)
	}
	u.User = url.UserPassword(user, password)
	return u.String(), nil
}
