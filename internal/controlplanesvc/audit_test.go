package controlplanesvc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// TestAuditWatch: the audit metrics say 1 while the chain verifies and 0
// once an entry is altered behind the control plane's back.
func TestAuditWatch(t *testing.T) {
	pg := harness.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := fmt.Sprintf("cp_audit_watch_%d", os.Getpid())
	if err := pg.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Exec(context.Background(), "postgres", "DROP DATABASE "+db+" WITH (FORCE)") })
	st, err := store.Open(ctx, pg.AdminURL(db), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := &policypb.Policy{Tenants: []*policypb.Tenant{{Id: "acme", Credentials: []string{"SCRAM-SHA-256$4096:OLopLdLn2iIXV2xKEo1XcA==$//3M5CupSzKX1w6u8HiK635fFImcH0okPkDYYZHP8jQ=:ZiWR3X/MmfuYovCcz0sGV9woCQm3U1q95TjeelpKh+A="}}}}
	if _, _, err := st.Seed(ctx, "test", p); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a, err := newAuditWatch(st, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a.check(ctx)
	if v := testutil.ToFloat64(a.ok); v != 1 {
		t.Fatalf("audit_chain_ok = %v on an untouched store", v)
	}
	if err := pg.Exec(ctx, db, "UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 1"); err != nil {
		t.Fatal(err)
	}
	a.check(ctx)
	if v := testutil.ToFloat64(a.ok); v != 0 {
		t.Fatalf("audit_chain_ok = %v after tampering", v)
	}
	if v := testutil.ToFloat64(a.checks.WithLabelValues("broken")); v != 1 {
		t.Fatalf("broken checks = %v", v)
	}
	if testutil.ToFloat64(a.last) == 0 {
		t.Fatal("no last-check time")
	}
	// run stops when told.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { a.run(stop); close(done) }()
	close(stop)
	<-done
}
