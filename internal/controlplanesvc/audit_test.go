package controlplanesvc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const scramAcme = "SCRAM-SHA-256$4096:OLopLdLn2iIXV2xKEo1XcA==$//3M5CupSzKX1w6u8HiK635fFImcH0okPkDYYZHP8jQ=:ZiWR3X/MmfuYovCcz0sGV9woCQm3U1q95TjeelpKh+A="

// metric is the value of one series of reg's, 0 when it is absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue series
				}
			}
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestAuditWatch: the watch's checks show in the store's metrics; an
// incremental check does not see an early entry altered in place, the
// periodic full check does, and the alert's metric stays 0 after it.
func TestAuditWatch(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	pg := harness.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := fmt.Sprintf("cp_audit_watch_%d", os.Getpid())
	if err := pg.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Exec(context.Background(), "postgres", "DROP DATABASE "+db+" WITH (FORCE)") })
	key, err := auditkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, pg.AdminURL(db), slog.New(slog.DiscardHandler), store.WithAuditKeys(store.AuditKeys{Signing: key}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		st.Close()
		goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/tenantguard/tenantguard/internal/fixture/childproc.(*Process).wait"))
	}()
	p := &policypb.Policy{Tenants: []*policypb.Tenant{{Id: "acme", Credentials: []string{scramAcme}}}}
	if _, _, err := st.Seed(ctx, "test", p); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := st.SetSuspended(ctx, "ops", "acme", i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(st)
	a := &auditWatch{store: st, log: slog.New(slog.DiscardHandler), every: time.Hour, fullEvery: time.Hour}
	a.check(ctx, store.VerifyIncremental)
	if v := metric(t, reg, "tenantguard_controlplane_audit_chain_ok"); v != 1 {
		t.Fatalf("audit_chain_ok = %v on an untouched store", v)
	}
	if v := metric(t, reg, "tenantguard_controlplane_audit_verified_seq"); v != 5 {
		t.Fatalf("verified_seq = %v", v)
	}
	if err := pg.Exec(ctx, db, "UPDATE tenantguard_cp.audit SET actor = 'mallory' WHERE seq = 1"); err != nil {
		t.Fatal(err)
	}
	a.check(ctx, store.VerifyIncremental)
	if v := metric(t, reg, "tenantguard_controlplane_audit_chain_ok"); v != 1 {
		t.Fatalf("audit_chain_ok = %v: an incremental check read seq 1", v)
	}

	// The periodic full check (every 20ms here; the incremental one would
	// take an hour) finds it.
	a.fullEvery = 20 * time.Millisecond
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { a.run(stop); close(done) }()
	harness.Eventually(t, time.Minute, func() error {
		if n := metric(t, reg, "tenantguard_controlplane_audit_checks_total", "mode", "full", "result", "broken"); n < 2 {
			return fmt.Errorf("%v full checks found it", n)
		}
		return nil
	})
	close(stop)
	<-done
	if v := metric(t, reg, "tenantguard_controlplane_audit_chain_ok"); v != 0 {
		t.Fatalf("audit_chain_ok = %v after tampering", v)
	}
	// Incremental checks keep reporting it.
	a.check(ctx, store.VerifyIncremental)
	if v := metric(t, reg, "tenantguard_controlplane_audit_chain_ok"); v != 0 {
		t.Fatalf("audit_chain_ok = %v after an incremental check", v)
	}
	if v := metric(t, reg, "tenantguard_controlplane_audit_checks_total", "mode", "incremental", "result", "broken"); v != 1 {
		t.Fatalf("incremental broken checks = %v", v)
	}
	if v := metric(t, reg, "tenantguard_controlplane_audit_signing_key_info", "key_id", key.ID()); v != 1 {
		t.Fatalf("signing_key_info = %v", v)
	}
	last := metric(t, reg, "tenantguard_controlplane_audit_last_full_check_timestamp_seconds")
	if d := time.Since(time.Unix(int64(last), 0)); d < -time.Second || d > time.Minute {
		t.Fatalf("last full check %v ago", d)
	}
}
