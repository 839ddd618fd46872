package faults

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

// redisSidecarConfig is a sidecar with a Postgres listener (required) on
// pgPort and a Redis listener for upstream; redisExtra goes in the redis
// section, extra at the top level.
func redisSidecarConfig(listen, redisListen, admin string, pgPort int, upstream, redisExtra, extra string) string {
	return fmt.Sprintf(`listen:
  postgres: %q
  redis: %q
  admin: %q
postgres:
  databases:
    - name: %s
      url: "postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable"
redis:
  upstream: %q
%stenants:
  - id: acme
    passwords: [%q]
  - id: globex
    passwords: [%q]
%s`, listen, redisListen, admin, appDB, appRole, appPass, pgPort, appDB, upstream, redisExtra, acmePass, globexPass, extra)
}

func redisClient(addr, tenant string, poolSize int) *goredis.Client {
	pw := acmePass
	if tenant == "globex" {
		pw = globexPass
	}
	return goredis.NewClient(&goredis.Options{Addr: addr, Username: tenant, Password: pw, Protocol: 2,
		DisableIdentity: true, MaxRetries: -1, PoolSize: poolSize,
		DialTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
}

// redisLoad runs clients that pipeline SETs and GETs of keys whose values
// name the key, so a reply delivered to the wrong request is seen: every
// reply must be an error or the right one.
type redisLoad struct {
	mu        sync.Mutex
	ok        int
	errs      map[string]int
	misrouted []string
	firstErr  time.Time
	stop      chan struct{}
	once      sync.Once
	wg        sync.WaitGroup
}

func startRedisLoad(addr string, clients int) *redisLoad {
	l := &redisLoad{errs: map[string]int{}, stop: make(chan struct{})}
	for i := range clients {
		l.wg.Add(1)
		go l.client(addr, i)
	}
	return l
}

func (l *redisLoad) finish() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

func (l *redisLoad) client(addr string, id int) {
	defer l.wg.Done()
	tenant := "acme"
	if id%2 == 1 {
		tenant = "globex"
	}
	c := redisClient(addr, tenant, 2)
	defer c.Close()
	for round := 0; ; round++ {
		select {
		case <-l.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		pipe := c.Pipeline()
		var sets []*goredis.StatusCmd
		var gets []*goredis.StringCmd
		for j := range 8 {
			key := fmt.Sprintf("%s:c%d:k%d", tenant, id, (round+j)%50)
			sets = append(sets, pipe.Set(ctx, key, "v="+key, 0))
			gets = append(gets, pipe.Get(ctx, key))
		}
		_, _ = pipe.Exec(ctx)
		hung := ctx.Err() != nil
		cancel()
		l.mu.Lock()
		if hung {
			l.misrouted = append(l.misrouted, fmt.Sprintf("client %d: a pipeline hung for 20s", id))
		}
		failed := false
		for _, s := range sets {
			switch err := s.Err(); {
			case err == nil && s.Val() != "OK":
				l.misrouted = append(l.misrouted, fmt.Sprintf("SET %s answered %q", s.Args()[1], s.Val()))
			case err != nil:
				failed = true
				l.errs[errClass(err)]++
			default:
				l.ok++
			}
		}
		for _, g := range gets {
			key := g.Args()[1].(string)
			switch err := g.Err(); {
			case err == nil && g.Val() != "v="+key:
				l.misrouted = append(l.misrouted, fmt.Sprintf("GET %s answered %q", key, g.Val()))
			case errors.Is(err, goredis.Nil):
				l.ok++ // its SET failed, or the server restarted empty
			case err != nil:
				failed = true
				l.errs[errClass(err)]++
			default:
				l.ok++
			}
		}
		if failed && l.firstErr.IsZero() {
			l.firstErr = time.Now()
		}
		l.mu.Unlock()
		if failed {
			select {
			case <-l.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// errClass names an error by its first word (TRYAGAIN, ERR, …), or as a
// network error.
func errClass(err error) string {
	var re goredis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		if i := strings.IndexByte(msg, ' '); i > 0 {
			return msg[:i]
		}
		return msg
	}
	return "net"
}

func (l *redisLoad) oks() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok
}

func (l *redisLoad) waitOK(t *testing.T, n int, d time.Duration) {
	t.Helper()
	target := l.oks() + n
	harness.Eventually(t, d, func() error {
		if got := l.oks(); got < target {
			return fmt.Errorf("%d of %d correct replies", got, target)
		}
		return nil
	})
}

// TestRedisKilled: redis-server is SIGKILLed while go-redis clients of two
// tenants pipeline through the sidecar's shared connections (and
// redis-benchmark runs beside them), then restarted on the same port.
// Replies are errors or the right ones, never another request's; service
// returns within recoveryBound; nothing hangs.
func TestRedisKilled(t *testing.T) {
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	rd := harness.Redis(t)
	listen, redisListen, admin := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	sc := harness.StartSidecar(t, tgBinary, admin, redisSidecarConfig(listen, redisListen, admin, pg.Port(), rd.Addr(), "", ""), harness.SidecarOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var bench *harness.Process
	if _, err := exec.LookPath("redis-benchmark"); err == nil {
		host, port, _ := strings.Cut(redisListen, ":")
		bench = harness.StartProcess(t, "redis-benchmark", "-h", host, "-p", port, "--user", "acme", "-a", acmePass,
			"-t", "set,get", "-n", "100000000", "-c", "8", "-P", "4", "-q", "-r", "1000")
	}
	load := startRedisLoad(redisListen, 8)
	defer load.finish()
	load.waitOK(t, 2000, 30*time.Second)

	killed := time.Now()
	if err := rd.Kill(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		load.mu.Lock()
		defer load.mu.Unlock()
		if load.firstErr.IsZero() {
			return errors.New("no client has seen an error yet")
		}
		return nil
	})
	result(t, groupUpstream, "redis-server SIGKILLed under load: first client error after the kill", "%v", load.firstErr.Sub(killed).Round(time.Millisecond))
	probe := redisClient(redisListen, "globex", 1)
	defer probe.Close()
	harness.Eventually(t, 10*time.Second, func() error {
		err := probe.Set(ctx, "probe", "x", 0).Err()
		if err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
			return fmt.Errorf("upstream down: %v, want -TRYAGAIN", err)
		}
		return nil
	})

	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	harness.Eventually(t, 30*time.Second, func() error { return probe.Set(ctx, "probe", "x", 0).Err() })
	rec := time.Since(start)
	result(t, groupUpstream, "redis-server SIGKILLed under load, restarted on its port: service back after its return", "%v (bound %v)", rec.Round(time.Millisecond), recoveryBound)
	if rec > recoveryBound {
		t.Errorf("service returned %v after redis-server did, want within %v", rec, recoveryBound)
	}
	load.waitOK(t, 5000, 30*time.Second)
	load.finish()
	load.mu.Lock()
	t.Logf("load: %d correct replies, errors %v", load.ok, load.errs)
	result(t, groupUpstream, "redis-server SIGKILLed under load: replies", "%d correct, %d wrong (another request's), errors %v", load.ok, len(load.misrouted), load.errs)
	if len(load.misrouted) > 0 {
		t.Errorf("%d wrong replies, e.g. %v", len(load.misrouted), load.misrouted[:min(5, len(load.misrouted))])
	}
	for class, n := range load.errs {
		if class != "TRYAGAIN" && class != "ERR" {
			t.Errorf("%d errors of class %s: clients must get -TRYAGAIN or -ERR from the sidecar", n, class)
		}
	}
	load.mu.Unlock()
	if bench != nil {
		_ = bench.Signal(9)
		<-bench.Done()
		if out := bench.Output(); strings.Contains(out, "Error") {
			t.Logf("redis-benchmark: %s", clip(out, 400))
		}
	}
	if err := sc.Exited(); err != nil {
		t.Fatalf("sidecar %v", err)
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
