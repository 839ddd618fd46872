package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
	"github.com/tenantguard/tenantguard/proxy/redis/clustermap"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestClusterRedisBenchmark: redis-benchmark's default set, -P 1 and
// -P 16, through the sidecar to the cluster without an error.
func TestClusterRedisBenchmark(t *testing.T) {
	rc := harness.RedisCluster(t)
	for _, m := range clusterModes {
		t.Run(m.name, func(t *testing.T) {
			runRedisBenchmark(t, startClusterProxy(t, rc, m.mode))
		})
	}
}

// nodeOf returns the address and node id of the master serving slot.
func nodeOf(t *testing.T, ctx context.Context, rc *redisserver.Cluster, slot uint16) (addr, id string) {
	t.Helper()
	masters, err := rc.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shards, err := rc.Do(ctx, masters[0], "CLUSTER", "SLOTS")
	if err != nil {
		t.Fatal(err)
	}
	// redis-cli's raw output: start, end, host, port, id, (replica host, port, id)..., one per line.
	lines := strings.Fields(shards)
	for i := 0; i+4 < len(lines); i++ {
		var lo, hi int
		if _, err := fmt.Sscan(lines[i], &lo); err != nil {
			continue
		}
		if _, err := fmt.Sscan(lines[i+1], &hi); err != nil {
			continue
		}
		if lo <= int(slot) && int(slot) <= hi && strings.Contains(lines[i+2], ".") {
			return lines[i+2] + ":" + lines[i+3], lines[i+4]
		}
	}
	t.Fatalf("no master for slot %d in %q", slot, shards)
	return "", ""
}

// TestClusterSlotMigration moves a slot between masters (MIGRATING /
// IMPORTING, MIGRATE, SETSLOT NODE) while clients increment counters and
// read keys in it: every reply is right, none is an error, and the MOVED
// that follows is replayed unseen by the client.
func TestClusterSlotMigration(t *testing.T) {
	rc := harness.RedisCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	p := startClusterProxy(t, rc, namespace.Spread)
	acme := p.client(t, "acme", acmeSecret, 2)
	ns := namespace.MustNew("acme", namespace.Spread)
	slot := clustermap.KeySlot(ns.AppendKey(nil, []byte("{m}counter")))
	const nkeys = 300
	pipe := acme.Pipeline()
	pipe.Del(ctx, "{m}counter")
	for i := range nkeys {
		pipe.Set(ctx, fmt.Sprintf("{m}k%d", i), fmt.Sprint(i), 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	srcAddr, srcID := nodeOf(t, ctx, rc, slot)
	masters, err := rc.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var dstAddr string
	for _, m := range masters {
		if m != srcAddr {
			dstAddr = m
			break
		}
	}
	dstID, err := rc.Do(ctx, dstAddr, "CLUSTER", "MYID")
	if err != nil {
		t.Fatal(err)
	}
	dstID = strings.TrimSpace(dstID)

	// Load: each worker increments the counter and reads keys of the slot.
	stop := make(chan struct{})
	var incrs atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	t.Cleanup(halt)
	for w := range 4 {
		c := p.client(t, "acme", acmeSecret, 2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := int64(0)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				pipe := c.Pipeline()
				incr := pipe.Incr(ctx, "{m}counter")
				k := (i*7 + w) % nkeys
				get := pipe.Get(ctx, fmt.Sprintf("{m}k%d", k))
				if _, err := pipe.Exec(ctx); err != nil {
					errc <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				incrs.Add(1)
				if v := incr.Val(); v <= last {
					errc <- fmt.Errorf("worker %d: INCR gave %d after %d", w, v, last)
					return
				}
				last = incr.Val()
				if get.Val() != fmt.Sprint(k) {
					errc <- fmt.Errorf("worker %d: GET {m}k%d = %q", w, k, get.Val())
					return
				}
			}
		}()
	}
	do := func(addr string, args ...string) string {
		t.Helper()
		out, err := rc.Do(ctx, addr, args...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(out, "ERR") {
			t.Fatalf("%s %v: %s", addr, args, out)
		}
		return out
	}
	s := fmt.Sprint(slot)
	do(dstAddr, "CLUSTER", "SETSLOT", s, "IMPORTING", srcID)
	do(srcAddr, "CLUSTER", "SETSLOT", s, "MIGRATING", dstID)
	host, port, _ := strings.Cut(dstAddr, ":")
	for {
		keys := strings.Fields(do(srcAddr, "CLUSTER", "GETKEYSINSLOT", s, "20"))
		if len(keys) == 0 {
			break
		}
		do(srcAddr, append([]string{"MIGRATE", host, port, "", "0", "5000", "KEYS"}, keys...)...)
	}
	for _, m := range masters {
		do(m, "CLUSTER", "SETSLOT", s, "NODE", dstID)
	}
	// Keep the load on until it has run past the move.
	after := incrs.Load()
	harness.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
		if incrs.Load() < after+200 {
			return errors.New("load has not run on past the move yet")
		}
		return nil
	})
	halt()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if got, err := acme.Get(ctx, "{m}counter").Int64(); err != nil || got != incrs.Load() {
		t.Errorf("counter = %d (%v), want %d increments", got, err, incrs.Load())
	}
	if moved := p.metric(t, "tenantguard_redis_cluster_redirects_total", map[string]string{"kind": "moved", "outcome": "replayed"}); moved == 0 {
		t.Error("no MOVED was replayed: the test did not exercise the redirect")
	}
	t.Logf("redirects: moved %v, ask %v",
		p.metric(t, "tenantguard_redis_cluster_redirects_total", map[string]string{"kind": "moved"}),
		p.metric(t, "tenantguard_redis_cluster_redirects_total", map[string]string{"kind": "ask"}))
	if a, _ := nodeOf(t, ctx, rc, slot); a != dstAddr {
		t.Errorf("slot %d on %s after the move, want %s", slot, a, dstAddr)
	}
}

// cleanClusterError reports whether a failed command got one of the
// errors an unavailable node may give: the proxy's own (TRYAGAIN, ERR
// tenantguard) or the cluster's (CLUSTERDOWN).
func cleanClusterError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"TRYAGAIN ", "ERR tenantguard: ", "CLUSTERDOWN "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// TestClusterFailover kills a master under load: commands fail with clean
// errors, never a wrong value, until its replica has taken over; then all
// of them succeed again, on connections that stayed open.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of its own and waits for a failover (-short)")
	}
	ctx := ctxT(t, 3*time.Minute)
	rc, err := redisserver.StartCluster(ctx, redisserver.ClusterOptions{})
	if errors.Is(err, redisserver.ErrNoCluster) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	p := startClusterProxy(t, rc, namespace.Spread)
	var ok, failed atomic.Int64
	var okAfter atomic.Int64 // successes since the last failure
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	t.Cleanup(halt) // before the proxy's cleanup, which checks for leaks
	checkErr := func() {
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One connection per worker: it must survive the failover.
			c := goredis.NewClient(&goredis.Options{Addr: p.addr, Username: "acme", Password: acmeSecret,
				Protocol: 2, DisableIdentity: true, PoolSize: 1, MaxRetries: -1})
			defer c.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, val := fmt.Sprintf("w%d:k%d", w, i%500), fmt.Sprintf("%d-%d", w, i)
				pipe := c.Pipeline()
				pipe.Set(ctx, key, val, 0)
				get := pipe.Get(ctx, key)
				_, err := pipe.Exec(ctx)
				switch {
				case err == nil && get.Val() != val:
					errc <- fmt.Errorf("GET %s = %q after SET %q", key, get.Val(), val)
					return
				case err == nil:
					ok.Add(1)
					okAfter.Add(1)
				case cleanClusterError(err):
					failed.Add(1)
					okAfter.Store(0)
				default:
					errc <- fmt.Errorf("worker %d: unclean error %w", w, err)
					return
				}
			}
		}()
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if ok.Load() < 200 {
			return errors.New("load not started")
		}
		return nil
	})
	masters, err := rc.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var victim *redisserver.Server
	for _, n := range rc.Nodes {
		if n.Addr() == masters[0] {
			victim = n
		}
	}
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		checkErr()
		if failed.Load() == 0 {
			return errors.New("no command failed yet")
		}
		return nil
	})
	// A replica takes over; every worker then succeeds run after run.
	harness.Eventually(t, 90*time.Second, func() error {
		checkErr()
		if n := okAfter.Load(); n < 400 {
			return fmt.Errorf("%d successes in a row since the last failure", n)
		}
		return nil
	})
	halt()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	t.Logf("%d pipelines succeeded, %d failed cleanly", ok.Load(), failed.Load())
}
