package store_test

import (
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
)

// TestFleetPublish: what one instance publishes is read by the others (not
// by itself), replaces what it published before, ages out when it stops
// publishing, and is gone once withdrawn.
func TestFleetPublish(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	ack := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
	if err := s.PublishFleet(ctx, "cp-a", []store.FleetNode{
		{Node: "sidecar-1", Streams: 1, Policy: true, AckedVersion: "7", LastAck: ack},
		{Node: "envoy-1", Streams: 2, AckedVersion: "7", LastAck: ack},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishFleet(ctx, "cp-b", []store.FleetNode{
		{Node: "sidecar-2", Streams: 1, Policy: true, NackedVersion: "8", LastNack: ack, LastError: "bad"},
	}); err != nil {
		t.Fatal(err)
	}

	got, err := s.Fleet(ctx, "cp-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Node != "envoy-1" || got[1].Node != "sidecar-1" || got[1].Instance != "cp-a" {
		t.Fatalf("cp-b sees %+v, want cp-a's envoy-1 and sidecar-1", got)
	}
	if n := got[1]; !n.Policy || n.Streams != 1 || n.AckedVersion != "7" || !n.LastAck.Equal(ack) || !n.LastNack.IsZero() || n.PublishedAt.IsZero() {
		t.Fatalf("sidecar-1 read back as %+v", n)
	}
	got, err = s.Fleet(ctx, "cp-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].NackedVersion != "8" || got[0].LastError != "bad" || !got[0].LastAck.IsZero() {
		t.Fatalf("cp-a sees %+v, want cp-b's sidecar-2 with its rejection", got)
	}

	// Publishing again replaces: sidecar-1 left cp-a.
	if err := s.PublishFleet(ctx, "cp-a", []store.FleetNode{{Node: "envoy-1", Streams: 1}}); err != nil {
		t.Fatal(err)
	}
	got, err = s.Fleet(ctx, "cp-c", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Node != "envoy-1" || got[1].Node != "sidecar-2" {
		t.Fatalf("after cp-a's second publish cp-c sees %+v", got)
	}

	// Rows older than fresh are ignored: cp-b stops publishing, cp-a
	// goes on; within a few seconds cp-b's rows no longer count.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := s.PublishFleet(ctx, "cp-a", []store.FleetNode{{Node: "envoy-1", Streams: 1}}); err != nil {
			t.Fatal(err)
		}
		got, err = s.Fleet(ctx, "cp-c", 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 && got[0].Instance == "cp-a" {
			break
		}
		if len(got) == 0 || time.Now().After(deadline) {
			t.Fatalf("with fresh 500ms cp-c sees %+v, want only cp-a, which goes on publishing", got)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}

	if err := s.WithdrawFleet(ctx, "cp-b"); err != nil {
		t.Fatal(err)
	}
	got, err = s.Fleet(ctx, "cp-c", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Instance != "cp-a" {
		t.Fatalf("after cp-b withdrew (fresh 1h) cp-c sees %+v", got)
	}
}
