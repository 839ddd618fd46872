package connbuf

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// pair returns both ends of a real TCP connection on loopback.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestReaderHoldsNothingWhileIdle(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"raw", func(c net.Conn) net.Conn { return c }},
		{"through Read", func(c net.Conn) net.Conn { return struct{ net.Conn }{c} }}, // no SyscallConn, as tls.Conn
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pair(t)
			r := NewReader(tc.wrap(server))
			if _, err := client.Write([]byte("hello world")); err != nil {
				t.Fatal(err)
			}
			b, err := r.Peek(5)
			if err != nil || string(b) != "hello" {
				t.Fatalf("Peek: %q %v", b, err)
			}
			if !r.Holding() {
				t.Fatal("no buffer while bytes are buffered")
			}
			if _, err := r.Discard(5); err != nil {
				t.Fatal(err)
			}
			rest, err := r.Peek(6)
			if err != nil || string(rest) != " world" {
				t.Fatalf("Peek: %q %v", rest, err)
			}
			_, _ = r.Discard(6)
			if r.Holding() || r.Buffered() != 0 {
				t.Fatalf("holding %v with %d buffered after consuming everything", r.Holding(), r.Buffered())
			}
			// A read that waits: on a raw connection no buffer is held meanwhile.
			done := make(chan []byte, 1)
			go func() {
				b, err := r.Peek(3)
				if err != nil {
					done <- nil
					return
				}
				done <- append([]byte(nil), b...)
			}()
			time.Sleep(50 * time.Millisecond) // let the read block
			if _, err := client.Write([]byte("abc")); err != nil {
				t.Fatal(err)
			}
			if got := <-done; string(got) != "abc" {
				t.Fatalf("after waiting: %q", got)
			}
		})
	}
}

func TestReaderLargePeekAndEOF(t *testing.T) {
	client, server := pair(t)
	r := NewReader(server)
	big := make([]byte, 3*Size+17)
	_, _ = rand.Read(big)
	go func() {
		_, _ = client.Write(big)
		_ = client.Close()
	}()
	got, err := r.Peek(len(big))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("large Peek: %d bytes, %v", len(got), err)
	}
	_, _ = r.Discard(len(big))
	if r.Holding() {
		t.Fatal("a large buffer is kept after it was consumed")
	}
	if _, err := r.Peek(1); err != io.EOF {
		t.Fatalf("at EOF: %v", err)
	}
}

func TestWriterReleasesOnFlush(t *testing.T) {
	client, server := pair(t)
	w := NewWriter(server)
	msg := bytes.Repeat([]byte("x"), Size+100) // crosses a buffer
	if _, err := w.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if w.buf != nil || w.Buffered() != 0 {
		t.Fatal("buffer kept after Flush")
	}
	got := make([]byte, 2+len(msg))
	if _, err := io.ReadFull(client, got); err != nil || string(got[:2]) != "ab" || !bytes.Equal(got[2:], msg) {
		t.Fatalf("written bytes differ: %v", err)
	}
}
