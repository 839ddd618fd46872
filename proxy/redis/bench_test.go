package redis_test

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// BenchmarkProxy drives the listener with real redis-server behind it, as
// redis-benchmark does: clients (GOMAXPROCS × -cpu parallelism) each send
// SET or GET, one command (-P 1) or 16 pipelined at a time, and wait for the
// replies. One op is one command. The clients are raw sockets that do not
// allocate, so -benchmem reports the proxy's allocations per command:
//
//	go test -run '^$' -bench BenchmarkProxy -benchmem ./proxy/redis
func BenchmarkProxy(b *testing.B) {
	for _, pipeline := range []int{1, 16} {
		for _, cmd := range []string{"SET", "GET"} {
			b.Run(fmt.Sprintf("%s/P%d", cmd, pipeline), func(b *testing.B) {
				p := startProxy(b, nil)
				var next atomic.Int64
				b.SetParallelism(8)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					c := benchClient(b, p.addr, acmeSecret)
					defer c.Close()
					key := "key:" + strconv.FormatInt(next.Add(1), 10)
					var one []byte
					if cmd == "SET" {
						one = resp.AppendCommand(nil, [][]byte{[]byte("SET"), []byte(key), []byte("xxx")})
					} else {
						one = resp.AppendCommand(nil, [][]byte{[]byte("GET"), []byte(key)})
					}
					batch := bytes.Repeat(one, pipeline)
					buf := make([]byte, 64<<10)
					for {
						for i := 0; i < pipeline; i++ {
							if !pb.Next() {
								return
							}
						}
						if _, err := c.Write(batch); err != nil {
							b.Error(err)
							return
						}
						if err := readReplies(c, buf, pipeline); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// benchClient connects and authenticates as acme.
func benchClient(b *testing.B, addr, secret string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	if _, err := c.Write(resp.AppendCommand(nil, [][]byte{[]byte("AUTH"), []byte("acme"), []byte(secret)})); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64)
	if err := readReplies(c, buf, 1); err != nil {
		b.Fatal(err)
	}
	return c
}

// readReplies reads n replies, each one line (+OK, $-1) or a short bulk
// string, counting CRLFs without parsing further.
func readReplies(c net.Conn, buf []byte, n int) error {
	lines, filled := 0, 0
	for {
		m, err := c.Read(buf[filled:])
		if err != nil {
			return err
		}
		for _, ch := range buf[filled : filled+m] {
			if ch == '\n' {
				lines++
			}
		}
		filled += m
		// A bulk string ("$3\r\nxxx\r\n") is two lines, "+OK" and "$-1" one.
		want := n
		if buf[0] == '$' && buf[1] != '-' {
			want = 2 * n
		}
		if lines >= want {
			if lines > want || buf[0] == '-' {
				return fmt.Errorf("unexpected reply %q", buf[:filled])
			}
			return nil
		}
		if filled == len(buf) {
			return fmt.Errorf("replies longer than %d bytes", len(buf))
		}
	}
}
