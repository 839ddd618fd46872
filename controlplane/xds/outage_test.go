package xds_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestControlPlaneDown: when the control plane goes away a data plane
// keeps its policy; a data plane started meanwhile starts from the cache
// file; when the control plane is back (same address, a newer version)
// both get the new version.
func TestControlPlaneDown(t *testing.T) {
	for _, pr := range protocols {
		t.Run(pr.name, func(t *testing.T) {
			cache := filepath.Join(t.TempDir(), "policy.json")
			cp := startControlPlane(t, "")
			if err := cp.SetPolicy("1", testPolicy(1)); err != nil {
				t.Fatal(err)
			}
			a := startDataPlane(t, cp.addr, "node-a", pr.delta, cache)
			a.waitApplied(t, "1")
			// The ACK is sent after the cache file is written.
			cp.waitAcked(t, "node-a", "1")
			if fi, err := os.Stat(cache); err != nil {
				t.Fatal(err)
			} else if fi.Mode().Perm() != 0o600 {
				t.Errorf("cache file mode %v, want 0600", fi.Mode().Perm())
			}

			cp.stop()
			harness.Eventually(t, waitFor, func() error {
				if metric(t, a.reg, "tenantguard_policy_connected") != 0 {
					return errNotYet("node-a still connected")
				}
				return nil
			})
			if got := a.Version(); got != "1" {
				t.Fatalf("with the control plane down node-a has version %q, want 1", got)
			}

			// A new data plane with the same cache file, no control plane.
			b := startDataPlane(t, cp.addr, "node-b", pr.delta, cache)
			select {
			case v := <-b.applied:
				if v != "1" {
					t.Fatalf("node-b first applied %q, want the cached 1", v)
				}
			case <-time.After(waitFor):
				t.Fatal("node-b did not apply the cached policy")
			}
			<-b.Ready()
			if got := b.Version(); got != "1" {
				t.Fatalf("node-b version %q, want 1", got)
			}

			// The control plane is back, on the same address, with version 2.
			cp2 := startControlPlane(t, cp.addr)
			if err := cp2.SetPolicy("2", testPolicy(2)); err != nil {
				t.Fatal(err)
			}
			a.waitApplied(t, "2")
			b.waitApplied(t, "2")
			cp2.waitAcked(t, "node-a", "2")
			cp2.waitAcked(t, "node-b", "2")
			if metric(t, a.reg, "tenantguard_policy_connected") != 1 {
				t.Error("node-a: tenantguard_policy_connected is not 1 after reconnecting")
			}
		})
	}
}

// TestRestartWithSameVersion: a data plane that reconnects to a control
// plane serving the version it already has ACKs it without applying it
// again.
func TestRestartWithSameVersion(t *testing.T) {
	for _, pr := range protocols {
		t.Run(pr.name, func(t *testing.T) {
			cp := startControlPlane(t, "")
			if err := cp.SetPolicy("7", testPolicy(7)); err != nil {
				t.Fatal(err)
			}
			a := startDataPlane(t, cp.addr, "node-a", pr.delta, "")
			a.waitApplied(t, "7")
			cp.waitAcked(t, "node-a", "7")
			cp.stop()

			cp2 := startControlPlane(t, cp.addr)
			if err := cp2.SetPolicy("7", testPolicy(7)); err != nil {
				t.Fatal(err)
			}
			cp2.waitAcked(t, "node-a", "7")
			if n := len(a.applied); n != 0 {
				t.Errorf("Apply called %d more times for the version in force", n)
			}
		})
	}
}

type errNotYet string

func (e errNotYet) Error() string { return string(e) }
