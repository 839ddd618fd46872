package xdsclient

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

const verifier = "SCRAM-SHA-256$4096:OLopLdLn2iIXV2xKEo1XcA==$//3M5CupSzKX1w6u8HiK635fFImcH0okPkDYYZHP8jQ=:ZiWR3X/MmfuYovCcz0sGV9woCQm3U1q95TjeelpKh+A="

func TestCacheFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	p := &policypb.Policy{Version: "v9", Name: "default", Tenants: []*policypb.Tenant{{Id: "acme", Credentials: []string{verifier}}}}
	for _, version := range []string{"v8", "v9"} { // the second write replaces the first
		if err := writeCache(path, version, p); err != nil {
			t.Fatal(err)
		}
	}
	version, got, err := readCache(path)
	if err != nil {
		t.Fatal(err)
	}
	if version != "v9" || !proto.Equal(got, p) {
		t.Fatalf("read back %q %v", version, got)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// TestBackoff: waits double from Initial to Max, each drawn from the upper
// half of its step (so never zero, and a fleet spreads out), and start
// again from Initial after a reset.
func TestBackoff(t *testing.T) {
	steps := []time.Duration{100, 200, 400, 800, 1000, 1000}
	seen := map[time.Duration]bool{}
	for range 50 {
		b := newBackoff(Backoff{Initial: 100 * time.Millisecond, Max: time.Second})
		for round := range 2 {
			for i, step := range steps {
				step *= time.Millisecond
				d := b.next()
				if d < step/2 || d > step {
					t.Fatalf("round %d, wait %d = %v, want within [%v, %v]", round, i, d, step/2, step)
				}
				if i == 0 {
					seen[d] = true
				}
			}
			b.reset()
		}
	}
	if len(seen) < 10 {
		t.Errorf("first waits took only %d distinct values in 100 draws: no jitter", len(seen))
	}
}
