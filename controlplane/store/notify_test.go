package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/test/harness"
)

// receive waits up to d for a version on ch.
func receive(t *testing.T, ch <-chan store.Version, d time.Duration) store.Version {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return v
	case <-timer.C:
		t.Fatalf("no version within %s", d)
	}
	panic("unreachable")
}

// receiveVersion waits for version n, skipping older ones.
func receiveVersion(t *testing.T, ch <-chan store.Version, n int64, d time.Duration) store.Version {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := receive(t, ch, time.Until(deadline))
		if v.Version == n {
			return v
		}
		if v.Version > n {
			t.Fatalf("got version %d, waiting for %d", v.Version, n)
		}
	}
}

func TestSubscribe(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	ch, cancel := s.Subscribe()
	select {
	case v := <-ch:
		t.Fatalf("an empty store delivered version %d", v.Version)
	default:
	}
	for range 3 {
		if _, err := s.Put(ctx, "alice", "", testPolicy(t, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	// A reader that fell behind gets the newest version, not a queue.
	if v := receive(t, ch, time.Second); v.Version != 3 || v.Policy.GetVersion() != "3" {
		t.Fatalf("got version %d, want 3", v.Version)
	}
	// A new subscriber gets the current version at once.
	ch2, cancel2 := s.Subscribe()
	if v := receive(t, ch2, time.Second); v.Version != 3 {
		t.Fatalf("new subscriber got version %d, want 3", v.Version)
	}
	cancel()
	cancel() // twice is harmless
	if _, ok := <-ch; ok {
		t.Fatal("a cancelled subscription's channel is open")
	}
	s.Close()
	if _, ok := <-ch2; ok {
		t.Fatal("Close left a subscription open")
	}
	cancel2()
	if ch3, _ := s.Subscribe(); ch3 != nil {
		if _, ok := <-ch3; ok {
			t.Fatal("Subscribe after Close delivered")
		}
	}
}

// TestNotifyAcrossControlPlanes runs two Stores on one database, as two
// control-plane processes: each sees the other's versions, also after its
// listener connection is killed.
func TestNotifyAcrossControlPlanes(t *testing.T) {
	db := newDatabase(t)
	a, b := openStore(t, db), openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	chB, cancelB := b.Subscribe()
	defer cancelB()

	if _, err := a.Put(ctx, "alice", "", testPolicy(t, "acme")); err != nil {
		t.Fatal(err)
	}
	if v := receive(t, chB, time.Second); v.Version != 1 || v.Author != "alice" || len(v.Policy.GetTenants()) != 1 {
		t.Fatalf("b got version %d by %q", v.Version, v.Author)
	}

	// Kill both listeners; each reconnects and LISTENs again.
	killListeners(t, db)
	harness.Eventually(t, 10*time.Second, func() error {
		if n := store.ListenCount(b); n < 2 {
			return fmt.Errorf("b has listened %d times", n)
		}
		return nil
	})
	if _, err := a.Put(ctx, "alice", "", testPolicy(t, "acme", "globex")); err != nil {
		t.Fatal(err)
	}
	receiveVersion(t, chB, 2, time.Second)

	// A version written while b's listener is away (and cannot come back)
	// arrives through the catch-up read once it reconnects: notifications
	// are not kept for a session that is gone.
	db.setConnections(t, false)
	killListeners(t, db)
	harness.Eventually(t, 10*time.Second, func() error {
		if n := listeners(t, db); n != 0 {
			return fmt.Errorf("%d listeners still connected", n)
		}
		return nil
	})
	if _, err := a.Put(ctx, "alice", "while b was away", testPolicy(t, "globex")); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-chB:
		t.Fatalf("b got version %d with no listener", v.Version)
	default:
	}
	db.setConnections(t, true)
	if v := receiveVersion(t, chB, 3, 10*time.Second); v.Comment != "while b was away" {
		t.Fatalf("version 3 comment %q", v.Comment)
	}
}

// killListeners ends the database's listener connections.
func killListeners(t *testing.T, db *database) {
	t.Helper()
	db.adminExec(t, fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' AND application_name = '%s'`,
		db.name, store.ListenerApplicationName))
}

// listeners counts the database's listener connections.
func listeners(t *testing.T, db *database) int {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	conn, err := pgx.Connect(ctx, db.pg.AdminURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2`,
		db.name, store.ListenerApplicationName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// setConnections allows or refuses new connections to the database (open
// ones stay), superusers included.
func (db *database) setConnections(t *testing.T, allow bool) {
	t.Helper()
	db.adminExec(t, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %v", db.name, allow))
	if !allow {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = db.pg.Exec(ctx, "postgres", fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS true", db.name))
		})
	}
}

// adminExec runs sql in the postgres database.
func (db *database) adminExec(t *testing.T, sql string) {
	t.Helper()
	if err := db.pg.Exec(ctxT(t, 10*time.Second), "postgres", sql); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func TestMetrics(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	for range 2 {
		if _, err := s.Put(ctxT(t, 10*time.Second), "alice", "", testPolicy(t, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"tenantguard_controlplane_policy_version":          2,
		"tenantguard_controlplane_listener_up":             1,
		"tenantguard_controlplane_listener_connects_total": 1,
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if _, ok := want[mf.GetName()]; ok { // the audit's are TestAuditMetrics'
				got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
}
