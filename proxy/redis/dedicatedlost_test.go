package redis_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestDedicatedConnLost: when a subscriber's own upstream connection dies,
// the client is told, and its next subscription gets a new connection of
// its own: never the shared one, where its messages would be taken for
// other clients' replies.
func TestDedicatedConnLost(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 30*time.Second)
	sub := dialRaw(t, p.addr)
	if got := sub.do("AUTH", "acme", acmeSecret); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	if got := sub.do("SUBSCRIBE", "a"); !strings.Contains(got, "subscribe") {
		t.Fatalf("SUBSCRIBE a: %q", got)
	}
	// The operator kills every pub/sub connection upstream.
	if err := p.direct(t).Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if got := sub.do("PING"); !strings.HasPrefix(got, "-TRYAGAIN") && !strings.HasPrefix(got, "-ERR tenantguard") {
			return errors.New("the proxy has not seen the connection die yet: " + got)
		}
		return nil
	})
	// The loss is told once to each command that met it: a reply owed on
	// the dead connection gets ERR, and a command the client had not yet
	// found it dead for gets TRYAGAIN (it did not run). Which of the two
	// the PING above got depends on timing, so SUBSCRIBE may meet one
	// TRYAGAIN; retried, as TRYAGAIN asks, it gets a new connection.
	got := sub.do("SUBSCRIBE", "c")
	if strings.HasPrefix(got, "-TRYAGAIN") {
		got = sub.do("SUBSCRIBE", "c")
	}
	if !strings.Contains(got, "subscribe") {
		t.Fatalf("SUBSCRIBE c after the loss: %q", got)
	}
	pub := p.client(t, "acme", acmeSecret, 2)
	for range 3 {
		if n, err := pub.Publish(ctx, "c", "hello").Result(); err != nil || n != 1 {
			t.Fatalf("PUBLISH c = %d, %v; want the one subscriber", n, err)
		}
		if got := sub.reply(); !strings.Contains(got, "hello") {
			t.Fatalf("subscriber got %q", got)
		}
	}
}
