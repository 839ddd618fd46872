package store_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

var dbSeq atomic.Int64

// database is a PostgreSQL database of the test's own, dropped when the
// test ends.
type database struct {
	pg   *pgcluster.Cluster
	name string
	url  string
}

func newDatabase(t *testing.T) *database {
	t.Helper()
	pg := harness.Postgres(t)
	name := fmt.Sprintf("cp_store_%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx := ctxT(t, 30*time.Second)
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.Exec(ctx, "postgres", fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", name)); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	return &database{pg: pg, name: name, url: pg.AdminURL(name)}
}

// exec runs sql in the test's database as the superuser.
func (db *database) exec(t *testing.T, sql string) {
	t.Helper()
	if err := db.pg.Exec(ctxT(t, 30*time.Second), db.name, sql); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// openStore opens a Store on db, closed when the test ends, after which no
// goroutine it started may be left.
func openStore(t *testing.T, db *database, opts ...store.Option) *store.Store {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	s, err := store.Open(ctxT(t, 30*time.Second), db.url, testLogger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		goleak.VerifyNone(t, ignore,
			// a server the test restarted is watched by a new goroutine of the harness
			goleak.IgnoreAnyFunction("github.com/tenantguard/tenantguard/internal/fixture/childproc.(*Process).wait"))
	})
	return s
}

var (
	verifierOnce sync.Once
	verifier     string
)

// credential is a SCRAM-SHA-256 verifier, made once.
func credential(t *testing.T) string {
	t.Helper()
	verifierOnce.Do(func() {
		p := &policypb.Policy{Tenants: []*policypb.Tenant{{Id: "x", Credentials: []string{"password-1"}}}}
		if err := policypb.HashCredentials(p); err != nil {
			t.Fatal(err)
		}
		verifier = p.Tenants[0].Credentials[0]
	})
	return verifier
}

// testPolicy is a valid policy with the given tenants and one table.
func testPolicy(t *testing.T, tenants ...string) *policypb.Policy {
	t.Helper()
	p := &policypb.Policy{Tables: []*policypb.Table{{Name: "public.orders", TenantColumn: "tenant_id"}}}
	for _, id := range tenants {
		p.Tenants = append(p.Tenants, &policypb.Tenant{Id: id, Credentials: []string{credential(t)}})
	}
	return p
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// save copies the store's tables aside (once per database); the function
// it returns puts them back as they were, for the next tampering.
func (db *database) save(t *testing.T) (restore func()) {
	t.Helper()
	db.exec(t, `CREATE SCHEMA saved;
		CREATE TABLE saved.versions AS SELECT * FROM tenantguard_cp.versions;
		CREATE TABLE saved.audit AS SELECT * FROM tenantguard_cp.audit;
		CREATE TABLE saved.head AS SELECT * FROM tenantguard_cp.head`)
	return func() {
		t.Helper()
		db.exec(t, `BEGIN;
			TRUNCATE tenantguard_cp.audit, tenantguard_cp.versions, tenantguard_cp.head;
			INSERT INTO tenantguard_cp.versions SELECT * FROM saved.versions ORDER BY version;
			INSERT INTO tenantguard_cp.audit SELECT * FROM saved.audit;
			INSERT INTO tenantguard_cp.head SELECT * FROM saved.head;
			COMMIT`)
	}
}
