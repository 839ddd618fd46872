package redis_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
)

// TestSlowClientDoesNotDelayOthers: an acme client that pipelines large
// GETs and never reads its replies shares the one upstream connection with
// a globex client whose latency is measured. globex's latency stays low
// (p99 and max) however long acme does not read, and acme is disconnected:
// when its unwritten replies pass the output limit, or when they make no
// progress within the write timeout.
func TestSlowClientDoesNotDelayOthers(t *testing.T) {
	const valueSize = 64 << 10
	for _, tc := range []struct {
		name         string
		gets         int // GETs of the 64 KiB value acme sends, never reading
		limit        int
		writeTimeout time.Duration
		reason       string // the sessions_ended_total reason acme is cut with
	}{
		// Far more than any socket buffers: cut at the limit, long before
		// the write timeout.
		{name: "over the output limit", gets: 2000, limit: 4 << 20, writeTimeout: 10 * time.Second, reason: "output_limit"},
		// More than the socket buffers, less than the limit: cut when the
		// backlog has not drained within the write timeout.
		{name: "not drained within the write timeout", gets: 200, limit: 64 << 20, writeTimeout: 5 * time.Second, reason: "write_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, func(c *proxyredis.Config) {
				c.SharedConns = 1 // acme and globex share one upstream connection
				c.ClientOutputLimit = tc.limit
				c.ClientWriteTimeout = tc.writeTimeout
			})
			ctx := ctxT(t, 60*time.Second)
			a := p.client(t, "acme", acmeSecret, 2)
			if err := a.Set(ctx, "big", strings.Repeat("x", valueSize), 0).Err(); err != nil {
				t.Fatal(err)
			}
			g := p.client(t, "globex", globexSecret, 2)
			if err := g.Set(ctx, "small", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}

			slow := dialSmallBuffers(t, p.addr)
			auth := "*3\r\n$4\r\nAUTH\r\n$4\r\nacme\r\n$" + strconv.Itoa(len(acmeSecret)) + "\r\n" + acmeSecret + "\r\n"
			if _, err := slow.Write([]byte(auth)); err != nil {
				t.Fatal(err)
			}
			if got := readLine(t, slow); got != "+OK" {
				t.Fatalf("AUTH: %q", got)
			}
			wrote := make(chan error, 1)
			go func() {
				_, err := slow.Write([]byte(strings.Repeat("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n", tc.gets)))
				wrote <- err
			}()

			// globex works on, measuring each command's latency, until acme
			// has been cut off and for a while after.
			cut := func() bool {
				return p.metric(t, "tenantguard_redis_sessions_ended_total", map[string]string{"reason": tc.reason}) > 0
			}
			var lat []time.Duration
			start := time.Now()
			var cutAt time.Time
			for time.Since(start) < 30*time.Second {
				t0 := time.Now()
				if v, err := g.Get(ctx, "small").Result(); err != nil || v != "v" {
					t.Fatalf("globex GET: %q %v", v, err)
				}
				lat = append(lat, time.Since(t0))
				if cutAt.IsZero() && cut() {
					cutAt = time.Now()
				}
				if !cutAt.IsZero() && time.Since(cutAt) > 500*time.Millisecond {
					break
				}
			}
			slices.Sort(lat)
			p99, worst := lat[len(lat)*99/100], lat[len(lat)-1]
			t.Logf("globex: %d GETs, p50 %v, p99 %v, max %v; acme cut after %v",
				len(lat), lat[len(lat)/2], p99, worst, cutAt.Sub(start))
			// Before, each of globex's commands behind acme's replies waited
			// for the write timeout. Now the worst is the time to read acme's
			// replies queued ahead (32 of them, 2 MiB) on a busy machine.
			if p99 > 250*time.Millisecond || worst > 2*time.Second {
				t.Fatalf("globex delayed by acme's unread replies: p99 %v, max %v", p99, worst)
			}
			if cutAt.IsZero() {
				t.Fatalf("acme not disconnected (%s) within %v", tc.reason, time.Since(start))
			}
			if tc.reason == "write_timeout" && cutAt.Sub(start) < tc.writeTimeout/2 {
				t.Fatalf("acme cut after %v, before its write timeout of %v", cutAt.Sub(start), tc.writeTimeout)
			}
			// acme's connection is closed: reading drains what was sent,
			// then ends.
			_ = slow.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.Copy(io.Discard, slow); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("acme not disconnected: %v", err)
			}
			<-wrote
			// globex, and the shared upstream connection, are unharmed.
			if v, err := g.Get(ctx, "small").Result(); err != nil || v != "v" {
				t.Fatalf("globex after: %q %v", v, err)
			}
		})
	}
}

// dialSmallBuffers connects with a small receive buffer, so a client that
// does not read fills it quickly.
func dialSmallBuffers(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readLine reads one CRLF-terminated line, byte by byte (nothing after it
// is consumed).
func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var line []byte
	var b [1]byte
	for !strings.HasSuffix(string(line), "\r\n") {
		if _, err := c.Read(b[:]); err != nil {
			t.Fatalf("read line: %v (so far %q)", err, line)
		}
		line = append(line, b[0])
	}
	return strings.TrimSuffix(string(line), "\r\n")
}
