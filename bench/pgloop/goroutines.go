//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log"
	"net"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/internal/connbuf"
)

// The goroutines mode (-mode goroutines) forwards the same way with the
// data plane's design instead of a loop: a goroutine per client reads its
// requests and writes them to the attached server connection, and a
// goroutine per server connection reads its replies and writes them to the
// client, each blocking in Go's netpoller. Beside the loop it separates
// what the design costs from what tenantguard's features cost.

// gServer is a pooled server connection and its reply goroutine.
type gServer struct {
	// conn is written by its owner, one Write per batch: the reply may
	// release the connection to another client before that Write
	// returns, so no write buffer may belong to the connection.
	conn net.Conn
	pool chan *gServer

	mu      sync.Mutex
	owner   *gClient
	pending int // requests (Query, Sync) owed a ReadyForQuery
}

type gClient struct {
	conn net.Conn
	wmu  sync.Mutex
	bw   *bufio.Writer // replies to the client, written by server goroutines
}

// serveGoroutines runs the goroutines mode until the listener fails.
func serveGoroutines(ctx context.Context, ln net.Listener, upstream string, size int) {
	pool := make(chan *gServer, size)
	for range size {
		pc, err := pgconn.Connect(ctx, upstream)
		if err != nil {
			log.Fatalf("pgloop: %v", err)
		}
		hj, err := pc.Hijack()
		if err != nil {
			log.Fatalf("pgloop: %v", err)
		}
		s := &gServer{conn: connbuf.Raw(hj.Conn), pool: pool} // raw system calls, as the data plane's
		go s.replies()
		pool <- s
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serveClient(connbuf.Raw(c), pool)
	}
}

// serveClient answers the startup, then forwards the client's requests.
func serveClient(c net.Conn, pool chan *gServer) {
	defer c.Close()
	if err := answerStartup(c); err != nil {
		return
	}
	cl := &gClient{conn: c, bw: bufio.NewWriterSize(c, 32<<10)}
	br := bufio.NewReaderSize(c, 32<<10)
	var cur *gServer
	var batch []byte
	for {
		hdr, err := br.Peek(5)
		if err != nil {
			return
		}
		n := 1 + int(binary.BigEndian.Uint32(hdr[1:5]))
		if n < 5 {
			return
		}
		at := len(batch)
		batch = slices.Grow(batch, n)[:at+n]
		if _, err := io.ReadFull(br, batch[at:]); err != nil {
			return
		}
		if br.Buffered() > 0 {
			continue // one write per batch of pipelined messages
		}
		if batch[0] == 'X' {
			return
		}
		reqs := 0
		for m := batch; len(m) > 0; m = m[1+int(binary.BigEndian.Uint32(m[1:5])):] {
			if m[0] == 'Q' || m[0] == 'S' {
				reqs++
			}
		}
		for {
			if cur == nil {
				cur = <-pool
				cur.mu.Lock()
				cur.owner = cl
			} else {
				cur.mu.Lock()
				if cur.owner != cl { // released at its last ReadyForQuery
					cur.mu.Unlock()
					cur = nil
					continue
				}
			}
			cur.pending += reqs
			cur.mu.Unlock()
			break
		}
		if _, err := cur.conn.Write(batch); err != nil {
			return
		}
		batch = batch[:0]
	}
}

// replies forwards the server's replies to the client that owns it, and
// gives the connection back at the ReadyForQuery that ends its requests
// outside a transaction.
func (s *gServer) replies() {
	br := bufio.NewReaderSize(s.conn, 32<<10)
	for {
		hdr, err := br.Peek(5)
		if err != nil {
			log.Fatalf("pgloop: server connection: %v", err)
		}
		n := 1 + int(binary.BigEndian.Uint32(hdr[1:5]))
		msg, err := br.Peek(n)
		if err != nil {
			log.Fatalf("pgloop: server connection: %v", err)
		}
		s.mu.Lock()
		cl := s.owner
		release := false
		if msg[0] == 'Z' {
			s.pending--
			release = s.pending == 0 && msg[5] == 'I'
			if release {
				s.owner = nil
			}
		}
		s.mu.Unlock()
		if cl != nil {
			cl.wmu.Lock()
			_, _ = cl.bw.Write(msg)
			if msg[0] == 'Z' || br.Buffered() == n {
				_ = cl.bw.Flush()
			}
			cl.wmu.Unlock()
		}
		_, _ = br.Discard(n)
		if release {
			s.pool <- s
		}
	}
}
