package redis_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// globexDigest is every globex key with its type and DUMP, read directly
// from redis-server.
func globexDigest(ctx context.Context, t *testing.T, d *goredis.Client) string {
	t.Helper()
	keys, err := d.Keys(ctx, "t:globex:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		dump, _ := d.Dump(ctx, k).Result()
		fmt.Fprintf(&b, "%s=%q;", k, dump)
	}
	return b.String()
}

// TestAttacks runs each attack as acme with globex's keys present: nothing
// reads or changes globex's keys, and globex keeps working.
func TestAttacks(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 60*time.Second)
	d := p.direct(t)
	g := p.client(t, "globex", globexSecret, 2)
	for _, err := range []error{
		g.Set(ctx, "secret", "globex-data", 0).Err(),
		g.RPush(ctx, "list", "globex-item").Err(),
		g.SAdd(ctx, "set", "globex-member").Err(),
		g.ZAdd(ctx, "z", goredis.Z{Score: 1, Member: "globex-member"}).Err(),
		g.XAdd(ctx, &goredis.XAddArgs{Stream: "stream", ID: "1-1", Values: []string{"f", "globex-data"}}).Err(),
		g.GeoAdd(ctx, "geo", &goredis.GeoLocation{Name: "globex-hq", Longitude: 13.4, Latitude: 52.5}).Err(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	rawKeys, err := d.Keys(ctx, "*globex*secret*").Result()
	if err != nil || len(rawKeys) != 1 {
		t.Fatalf("raw key of globex: %v %v", rawKeys, err)
	}
	raw := rawKeys[0]
	before := globexDigest(ctx, t, d)

	a := p.client(t, "acme", acmeSecret, 2)
	if err := a.RPush(ctx, "mylist", "1", "2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "mine", "acme-data", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []any
		noperm bool // must be refused with NOPERM
	}{
		{"KEYS *", []any{"KEYS", "*"}, false},
		{"KEYS raw prefix", []any{"KEYS", "t:globex:*"}, false},
		{"SCAN", []any{"SCAN", "0", "MATCH", "*", "COUNT", "10000"}, false},
		{"SCAN TYPE", []any{"SCAN", "0", "TYPE", "string"}, false},
		{"RANDOMKEY", []any{"RANDOMKEY"}, true},
		{"GET raw name", []any{"GET", raw}, false},
		{"GET with brace tag", []any{"GET", "{t:globex}:secret"}, false},
		{"SORT BY/GET", []any{"SORT", "mylist", "BY", raw, "GET", raw, "GET", "#"}, false},
		{"SORT STORE", []any{"SORT", "mylist", "STORE", raw}, false},
		{"EVAL undeclared", []any{"EVAL", "return redis.call('GET', string.sub(KEYS[1], 1, 0) .. ARGV[1])", "1", "x", raw}, false},
		{"EVAL writes undeclared", []any{"EVAL", "return redis.call('SET', ARGV[1], 'pwned')", "0", raw}, false},
		{"FCALL", []any{"FCALL", "f", "0"}, true},
		{"RENAME onto raw", []any{"RENAME", "mine", raw}, false},
		{"COPY from raw", []any{"COPY", raw, "stolen"}, false},
		{"COPY DB", []any{"COPY", "mylist", "x", "DB", "1"}, true},
		{"MSET raw", []any{"MSET", raw, "overwritten", "k2", "v2"}, false},
		{"LMOVE from raw list", []any{"LMOVE", "t:globex:list", "mylist", "LEFT", "RIGHT"}, false},
		{"SUNIONSTORE", []any{"SUNIONSTORE", "out", "t:globex:set", "set"}, false},
		{"ZUNIONSTORE", []any{"ZUNIONSTORE", "out2", "2", "t:globex:z", "z", "WEIGHTS", "1", "1"}, false},
		{"GEORADIUS STORE", []any{"GEORADIUS", "t:globex:geo", "13.4", "52.5", "100", "km", "STORE", raw}, false},
		{"XREAD several streams", []any{"XREAD", "COUNT", "5", "STREAMS", "stream", "t:globex:stream", "0", "0"}, false},
		{"SELECT 1", []any{"SELECT", "1"}, true},
		{"SWAPDB", []any{"SWAPDB", "0", "1"}, true},
		{"MOVE", []any{"MOVE", "mine", "1"}, true},
		{"FLUSHALL", []any{"FLUSHALL"}, false},
		{"DBSIZE", []any{"DBSIZE"}, false},
		{"CLIENT KILL", []any{"CLIENT", "KILL", "TYPE", "normal"}, true},
		{"CLIENT LIST", []any{"CLIENT", "LIST"}, true},
		{"CONFIG SET", []any{"CONFIG", "SET", "notify-keyspace-events", "KEA"}, true},
		{"DEBUG", []any{"DEBUG", "SLEEP", "0"}, true},
		{"MIGRATE", []any{"MIGRATE", "127.0.0.1", "1", raw, "0", "1000"}, true},
		{"OBJECT ENCODING raw", []any{"OBJECT", "ENCODING", raw}, false},
		{"PUBSUB NUMPAT", []any{"PUBSUB", "NUMPAT"}, true},
		{"INFO keyspace", []any{"INFO", "keyspace"}, false},
		{"INFO everything", []any{"INFO", "everything"}, false},
		{"SCRIPT FLUSH", []any{"SCRIPT", "FLUSH"}, false},
		{"SCRIPT KILL", []any{"SCRIPT", "KILL"}, true},
		{"FUNCTION LOAD", []any{"FUNCTION", "LOAD", "#!lua name=t_globex\nredis.register_function('f', function() return 1 end)"}, true},
		{"CLIENT TRACKING REDIRECT", []any{"CLIENT", "TRACKING", "ON", "REDIRECT", "1", "BCAST"}, true},
		{"SHUTDOWN", []any{"SHUTDOWN", "NOSAVE"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := a.Do(ctx, tc.args...).Result()
			if tc.noperm {
				if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
					t.Fatalf("want NOPERM, got %v %v", v, err)
				}
			}
			if s := fmt.Sprint(v, err); strings.Contains(s, "globex") {
				t.Fatalf("reply mentions globex: %s", s)
			}
			if after := globexDigest(ctx, t, d); after != before {
				t.Fatalf("globex's keys changed:\n%s\n%s", before, after)
			}
			if got, err := g.Get(ctx, "secret").Result(); err != nil || got != "globex-data" {
				t.Fatalf("globex after the attack: %q %v", got, err)
			}
			// acme's connection still works.
			if err := a.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		})
	}

	// PSUBSCRIBE * hears nothing of globex's channels.
	sub := a.PSubscribe(ctx, "*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := g.Publish(ctx, "globex-channel", "private").Result(); err != nil || n != 0 {
		t.Fatalf("globex PUBLISH reached %d subscribers (%v): acme's PSUBSCRIBE * heard it", n, err)
	}

	// Malformed and oversized frames: a protocol error and a closed
	// connection; globex unaffected.
	for _, frame := range []string{
		"*2\r\n$3\r\nGET\r\n$-5\r\n",
		"*99999999999999\r\n",
		"*1\r\n$999999999999\r\n",
		"*1\r\n$3\r\nGET\r\n",
		"\"unbalanced\r\n",
	} {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "*3\r\n$4\r\nAUTH\r\n$4\r\nacme\r\n$%d\r\n%s\r\n", len(acmeSecret), acmeSecret)
		if _, err := c.Write([]byte(frame)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		if line != "+OK\r\n" {
			t.Fatalf("AUTH: %q", line)
		}
		reply, _ := br.ReadString('\n')
		rest, _ := br.ReadString('\n')
		c.Close()
		if frame == "*1\r\n$3\r\nGET\r\n" {
			if !strings.HasPrefix(reply, "-ERR wrong number") {
				t.Fatalf("%q: %q", frame, reply)
			}
			continue
		}
		if !strings.HasPrefix(reply, "-ERR Protocol error") || rest != "" {
			t.Fatalf("frame %q: reply %q then %q", frame, reply, rest)
		}
	}
	if after := globexDigest(ctx, t, d); after != before {
		t.Fatalf("globex's keys changed")
	}
}

// TestKeyspaceNotifications: a tenant's keyspace subscription hears its
// own keys only.
func TestKeyspaceNotifications(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 20*time.Second)
	d := p.direct(t)
	if err := d.ConfigSet(ctx, "notify-keyspace-events", "KA").Err(); err != nil {
		t.Fatal(err)
	}
	defer d.ConfigSet(context.Background(), "notify-keyspace-events", "")
	a := p.client(t, "acme", acmeSecret, 2)
	g := p.client(t, "globex", globexSecret, 2)
	sub := a.PSubscribe(ctx, "__keyspace@0__:watched*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Set(ctx, "watched-globex", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "watched-acme", "y", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Redis delivers in order: had globex's event reached acme, it would come first.
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Channel != "__keyspace@0__:watched-acme" || msg.Payload != "set" {
		t.Fatalf("first keyspace event %+v", msg)
	}
}

// TestTransactionRepliesStayScoped: key names inside EXEC's reply (KEYS,
// SCAN, BLPOP queued in MULTI) lose the namespace like any other reply,
// and show nothing of the other tenant.
func TestTransactionRepliesStayScoped(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 20*time.Second)
	g := p.client(t, "globex", globexSecret, 2)
	if err := g.Set(ctx, "tx-secret", "globex-data", 0).Err(); err != nil {
		t.Fatal(err)
	}
	a := p.client(t, "acme", acmeSecret, 2)
	if err := a.RPush(ctx, "tx-list", "acme-item").Err(); err != nil {
		t.Fatal(err)
	}
	tx := a.TxPipeline()
	keys := tx.Keys(ctx, "tx-*")
	scan := tx.Scan(ctx, 0, "tx-*", 1000)
	pop := tx.BLPop(ctx, time.Second, "tx-list")
	if _, err := tx.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if got := keys.Val(); len(got) != 1 || got[0] != "tx-list" {
		t.Fatalf("KEYS in EXEC: %q", got)
	}
	if got, _ := scan.Val(); len(got) != 1 || got[0] != "tx-list" {
		t.Fatalf("SCAN in EXEC: %q", got)
	}
	if got := pop.Val(); len(got) != 2 || got[0] != "tx-list" || got[1] != "acme-item" {
		t.Fatalf("BLPOP in EXEC: %q", got)
	}
}
