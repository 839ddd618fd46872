package faults

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/test/harness"
)

// Bounds on what one hostile connection can cost the sidecar, from its
// limits (the figures are the defaults, and these tests' settings):
//
//   - Postgres, before authentication: startup_timeout (10s; 2s here) to
//     send the startup packet and authenticate; the startup packet is at
//     most 10,000 bytes (PostgreSQL's own limit), so a partial one holds
//     at most that.
//   - Postgres, authenticated: one message of at most max_message_bytes
//     (64 MiB) read at a time; replies written in batches of at most a
//     server read buffer (32 KiB) or one request's, each within
//     client_write_timeout (30s; 2s here) or the client is disconnected,
//     so a client that never reads holds its server connection no longer.
//   - Redis, before AUTH: auth_timeout (10s; 2s here), at most 10
//     arguments of 16 KiB and 256 KiB in all, as redis-server.
//   - Redis, authenticated: one command of at most 1 GiB in all and 512
//     MiB per argument (redis-server's proto-max-bulk-len and
//     client-query-buffer-limit); at most 32 replies owed on a shared
//     connection (further commands are not read meanwhile) and at most
//     client_output_limit (4 MiB) plus one reply waiting to be written, or
//     a write with no progress for client_write_timeout (5s), before the
//     client is disconnected.
const hostileLimits = `  startup_timeout: 2s
  client_write_timeout: 2s
`

const hostileRedisLimits = `  auth_timeout: 2s
  client_write_timeout: 2s
`

// startHostileSidecar starts a sidecar with short timeouts for the
// hostile-client tests.
func startHostileSidecar(t *testing.T) (listen, redisListen string, sc *harness.Sidecar) {
	t.Helper()
	pg := harness.Postgres(t)
	setupPostgres(t, pg)
	rd := harness.Redis(t)
	listen, redisListen, admin := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	cfg := redisSidecarConfig(listen, redisListen, admin, pg.Port(), rd.Addr(), hostileRedisLimits, "")
	cfg = strings.Replace(cfg, "redis:\n", hostileLimits+"redis:\n", 1)
	sc = harness.StartSidecar(t, tgBinary, admin, cfg, harness.SidecarOptions{LogLevel: "warn"})
	return listen, redisListen, sc
}

// quietTenant checks, while an attack runs, that the other tenant is
// served on both protocols: it returns a stop function that fails the
// test if a request of the quiet tenant failed.
func quietTenant(t *testing.T, listen, redisListen string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var served int
	wg.Add(1)
	go func() {
		defer wg.Done()
		pc, err := pgconn.Connect(ctx, tenantURL(listen, "globex"))
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			return
		}
		defer pc.Close(context.Background())
		rc := redisClient(redisListen, "globex", 1)
		defer rc.Close()
		for ctx.Err() == nil {
			qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := pc.Exec(qctx, "SELECT 1").ReadAll()
			if err == nil {
				err = rc.Set(qctx, "quiet", "v", 0).Err()
			}
			qcancel()
			mu.Lock()
			if err != nil && ctx.Err() == nil {
				errs = append(errs, err)
			} else if err == nil {
				served++
			}
			mu.Unlock()
			time.Sleep(10 * time.Millisecond) // the quiet tenant's pace
		}
	}()
	harness.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if served == 0 && len(errs) == 0 {
			return errors.New("the quiet tenant has not been served yet")
		}
		return nil
	})
	return func() {
		t.Helper()
		cancel()
		wg.Wait()
		if len(errs) > 0 {
			t.Errorf("the quiet tenant failed %d times during the attack: %v", len(errs), errs[0])
		}
		if served == 0 {
			t.Errorf("the quiet tenant was never served during the attack")
		}
	}
}

// closedWithin waits until the sidecar has closed c (a read returns EOF or
// a reset), reading and dropping what it sends; d bounds the wait.
func closedWithin(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if err == nil || !isTimeout(err) {
		return nil // EOF (io.Copy's nil) or reset: closed
	}
	return fmt.Errorf("still open after %v", d)
}

// TestSlowloris: clients that send part of a startup packet, of an AUTH
// frame, or of a command and then nothing are closed at the startup or
// auth timeout; the other tenant is served meanwhile.
func TestSlowloris(t *testing.T) {
	listen, redisListen, sc := startHostileSidecar(t)
	base, _ := harness.SampleProc(sc.Pid())
	stop := quietTenant(t, listen, redisListen)
	const n = 200
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	for i := range n {
		var c net.Conn
		var err error
		if i%2 == 0 {
			c, err = net.Dial("tcp", listen)
			if err == nil {
				// A startup packet's length and half its protocol version.
				_, err = c.Write([]byte{0, 0, 0, 40, 0, 3})
			}
		} else {
			c, err = net.Dial("tcp", redisListen)
			if err == nil {
				_, err = c.Write([]byte("*3\r\n$4\r\nAUTH\r\n$4\r\nac"))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	held, _ := harness.SampleProc(sc.Pid())
	for i, c := range conns {
		if err := closedWithin(c, 10*time.Second); err != nil {
			t.Fatalf("slowloris connection %d: %v (startup/auth timeout 2s)", i, err)
		}
	}
	stop()
	result(t, groupHostile, fmt.Sprintf("slowloris: %d partial startup packets and AUTH frames, closed at the 2s timeouts: RSS before, holding them", n), "%d MiB, %d MiB",
		base.RSSKiB/1024, held.RSSKiB/1024)

	// Authenticated Redis clients holding a partial command are, as with
	// redis-server, not timed out; what they hold is bounded by what they
	// sent (a 500 MB bulk announced but not sent costs no resident memory).
	var partial []net.Conn
	defer func() { closeAll(partial) }()
	for range 20 {
		c := authedRedis(t, redisListen)
		partial = append(partial, c)
		if _, err := c.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$500000000\r\nxx")); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 10*time.Second, func() error { return selectOne(context.Background(), listen, "globex") })
	after, _ := harness.SampleProc(sc.Pid())
	result(t, groupHostile, "20 authenticated clients announcing a 500 MB argument, not sending it: RSS", "%d MiB (base %d MiB)", after.RSSKiB/1024, base.RSSKiB/1024)
	if grown := after.RSSKiB - base.RSSKiB; grown > 200<<10 {
		t.Errorf("20 announced-but-unsent 500 MB bulks grew the sidecar by %d MiB", grown/1024)
	}
}

func authedRedis(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "AUTH acme %s\r\n", acmePass); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "+OK\r\n" {
		t.Fatalf("AUTH: %q %v", line, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// TestGarbageFlood: 1,000 connections (half to each listener) send 4 KiB
// of random bytes each: every one is closed with a protocol error or at
// the timeout, the sidecar survives, the other tenant is served.
func TestGarbageFlood(t *testing.T) {
	listen, redisListen, sc := startHostileSidecar(t)
	stop := quietTenant(t, listen, redisListen)
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 100)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			addr := listen
			if i%2 == 1 {
				addr = redisListen
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			junk := make([]byte, 4096)
			_, _ = rand.Read(junk)
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write(junk) // the sidecar may close before taking it all
			if err := closedWithin(c, 10*time.Second); err != nil {
				errs <- fmt.Errorf("garbage connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	stop()
	if err := sc.Exited(); err != nil {
		t.Fatalf("sidecar %v", err)
	}
	// 500 failed handshakes per listener, far past the default 100 a
	// second: both listeners paced their accepts.
	m, err := sc.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tenantguard_pg_accepts_paced_total", "tenantguard_redis_accepts_paced_total"} {
		if harness.Metric(m, name) == 0 {
			t.Errorf("%s is 0 after the flood: accepts were not paced", name)
		}
	}
	after, _ := harness.SampleProc(sc.Pid())
	result(t, groupHostile, fmt.Sprintf("garbage flood: %d connections of random bytes, each closed: RSS after", n), "%d MiB", after.RSSKiB/1024)
}

// TestOversizedLengths: length headers past every limit are refused with
// a protocol error and a closed connection, before any allocation.
func TestOversizedLengths(t *testing.T) {
	listen, redisListen, sc := startHostileSidecar(t)
	stop := quietTenant(t, listen, redisListen)
	base, _ := harness.SampleProc(sc.Pid())
	cases := []struct {
		name, addr string
		auth       bool
		send       []byte
		want       string // in what the sidecar answers before closing ("" = just close)
	}{
		{"pg startup length 2^31-1", listen, false, []byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0}, ""},
		{"pg startup length 4", listen, false, []byte{0, 0, 0, 4}, ""},
		{"redis multibulk 2^31", redisListen, false, []byte("*2147483648\r\n"), "Protocol error"},
		{"redis bulk 2^40 before AUTH", redisListen, false, []byte("*1\r\n$1099511627776\r\n"), "Protocol error"},
		{"redis bulk 1 GiB after AUTH", redisListen, true, []byte("*2\r\n$3\r\nGET\r\n$1073741824\r\n"), "Protocol error"},
		{"redis inline 1 MiB", redisListen, true, []byte(strings.Repeat("a", 1<<20)), "Protocol error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c net.Conn
			if tc.auth {
				c = authedRedis(t, tc.addr)
			} else {
				var err error
				if c, err = net.Dial("tcp", tc.addr); err != nil {
					t.Fatal(err)
				}
			}
			defer c.Close()
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write(tc.send)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if isTimeout(err) {
				t.Fatalf("not closed within 10s (got %q)", got)
			}
			if !strings.Contains(string(got), tc.want) {
				t.Fatalf("answered %q, want %q", got, tc.want)
			}
		})
	}
	// An authenticated Postgres client announcing a 1 GiB message.
	t.Run("pg message 1 GiB after auth", func(t *testing.T) {
		pc, err := pgconn.Connect(context.Background(), tenantURL(listen, "acme"))
		if err != nil {
			t.Fatal(err)
		}
		hj, err := pc.Hijack()
		if err != nil {
			t.Fatal(err)
		}
		c := hj.Conn
		defer c.Close()
		msg := []byte{'Q', 0, 0, 0, 0}
		binary.BigEndian.PutUint32(msg[1:], 1<<30)
		_, _ = c.Write(msg)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if isTimeout(err) {
			t.Fatalf("not closed within 10s (got %q)", got)
		}
		if !strings.Contains(string(got), "08P01") {
			t.Fatalf("answered %q, want a protocol error", got)
		}
	})
	stop()
	after, _ := harness.SampleProc(sc.Pid())
	if grown := after.RSSKiB - base.RSSKiB; grown > 100<<10 {
		t.Errorf("oversized length headers grew the sidecar by %d MiB", grown/1024)
	}
}

// TestClientNeverReads: a Postgres client that runs a large SELECT and
// never reads is disconnected at client_write_timeout, and its server
// connection is freed; a Redis client that pipelines a million GETs of a
// 100 KB value and never reads is disconnected at its output limit. The
// other tenant is served throughout, and the sidecar's memory stays
// bounded.
func TestClientNeverReads(t *testing.T) {
	listen, redisListen, sc := startHostileSidecar(t)
	base, _ := harness.SampleProc(sc.Pid())
	stop := quietTenant(t, listen, redisListen)

	t.Run("postgres large select", func(t *testing.T) {
		var conns []net.Conn
		for range 4 {
			pc, err := pgconn.Connect(context.Background(), tenantURL(listen, "acme"))
			if err != nil {
				t.Fatal(err)
			}
			hj, err := pc.Hijack()
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, hj.Conn)
		}
		defer closeAll(conns)
		// All four start together, so all four are seen holding their
		// server connections before the first is cut off.
		q := "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)\x00"
		msg := append(binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(q))), q...)
		for _, c := range conns {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
		active := func() (float64, error) {
			m, err := sc.Metrics()
			if err != nil {
				return 0, err
			}
			return harness.Metric(m, "tenantguard_pg_server_connections", `state="active"`), nil
		}
		// First the four SELECTs hold their server connections (seen, so
		// the wait below cannot pass before they started)...
		harness.Eventually(t, 30*time.Second, func() error {
			if a, err := active(); err != nil || a < 4 {
				return fmt.Errorf("%v server connections active, want the 4 SELECTs' (%v)", a, err)
			}
			return nil
		})
		// ...then, never read, each is cut off once a batch waits 2s
		// (client_write_timeout), and its server connection freed.
		harness.Eventually(t, 30*time.Second, func() error {
			a, err := active()
			if err != nil {
				return err
			}
			if a > 1 { // the quiet tenant's, at most
				return fmt.Errorf("%v server connections still held by clients that do not read", a)
			}
			return nil
		})
		mid, _ := harness.SampleProc(sc.Pid())
		result(t, groupHostile, "4 Postgres clients running 1 GB SELECTs, never reading: cut off, server connections freed; RSS", "%d MiB", mid.RSSKiB/1024)
	})

	t.Run("redis million-command pipeline", func(t *testing.T) {
		setter := redisClient(redisListen, "acme", 1)
		defer setter.Close()
		if err := setter.Set(context.Background(), "big", strings.Repeat("v", 100_000), 0).Err(); err != nil {
			t.Fatal(err)
		}
		c := authedRedis(t, redisListen)
		defer c.Close()
		done := make(chan error, 1)
		go func() {
			cmd := []byte("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
			batch := []byte(strings.Repeat(string(cmd), 1000))
			_ = c.SetWriteDeadline(time.Now().Add(60 * time.Second))
			for range 1000 { // 1e6 commands
				if _, err := c.Write(batch); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err == nil || isTimeout(err) {
				t.Fatalf("the pipeline was neither refused nor cut off: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the never-reading pipeline still runs after 60s")
		}
		m, err := sc.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		cut := harness.Metric(m, "tenantguard_redis_sessions_ended_total", `reason="output_limit"`) +
			harness.Metric(m, "tenantguard_redis_sessions_ended_total", `reason="write_timeout"`)
		if cut < 1 {
			t.Errorf("no client was cut off for not reading")
		}
		mid, _ := harness.SampleProc(sc.Pid())
		result(t, groupHostile, "a never-reading pipeline of 1e6 GETs of a 100 KB value: cut off; RSS", "%d MiB", mid.RSSKiB/1024)
	})
	stop()
	after, _ := harness.SampleProc(sc.Pid())
	if grown := after.RSSKiB - base.RSSKiB; grown > 300<<10 {
		t.Errorf("never-reading clients grew the sidecar by %d MiB", grown/1024)
	}
	if err := sc.Exited(); err != nil {
		t.Fatalf("sidecar %v", err)
	}
}
