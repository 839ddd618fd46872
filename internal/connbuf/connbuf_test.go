package connbuf

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
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

// TestRawWrite checks Raw's Write: waiting for room, deadlines and errors
// as net.Conn's.
func TestRawWrite(t *testing.T) {
	client, server := pair(t)
	w := Raw(client)
	if rc, ok := w.(*rawConn); !ok || rc.w == nil {
		t.Fatal("a TCP connection got no raw writer")
	}
	if plain := (struct{ net.Conn }{client}); Raw(plain) != net.Conn(plain) {
		t.Fatal("a connection without a descriptor was not given back as it is")
	}

	// Far more than the socket buffers hold: the writer must wait for room
	// (EAGAIN, then the netpoller) and deliver every byte in order.
	want := make([]byte, 16<<20)
	if _, err := rand.Read(want); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(server, int64(len(want))))
		got <- b
	}()
	if n, err := w.Write(want); n != len(want) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
	}
	if !bytes.Equal(<-got, want) {
		t.Fatal("the bytes read differ from the bytes written")
	}

	// A full socket past the write deadline reports a timeout, as net.Conn does.
	_ = client.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := w.Write(want)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a full socket past its deadline = %d, %v; want a timeout", n, err)
	}
	if n <= 0 || n >= len(want) {
		t.Fatalf("Write to a full socket past its deadline wrote %d bytes; want part of %d", n, len(want))
	}
	_ = client.SetWriteDeadline(time.Time{})

	// The peer gone: an error, as net.Conn's.
	server.Close()
	for {
		if _, err = w.Write([]byte("x")); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Write to a closed peer: %v; want EPIPE or ECONNRESET", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("Write error %T %v is not a write *net.OpError", err, err)
	}

	// Our end closed.
	client.Close()
	if _, err := w.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v; want net.ErrClosed", err)
	}
}

func TestRaw(t *testing.T) {
	client, server := pair(t)
	rc := Raw(client)
	if _, ok := rc.(*rawConn); !ok {
		t.Fatal("a TCP connection was not wrapped")
	}
	if Raw(rc) != rc {
		t.Fatal("Raw wrapped its own wrapper again")
	}
	if c := (struct{ net.Conn }{client}); Raw(c) != net.Conn(c) {
		t.Fatal("a connection without a descriptor was wrapped")
	}
	if _, ok := rc.(syscall.Conn); !ok {
		t.Fatal("the wrapper hides the socket's SyscallConn")
	}

	// Both ways, through a reader that holds bytes of its own.
	if _, err := rc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}

	// Nothing to read past the deadline: a timeout, as net.Conn's.
	_ = rc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := rc.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v; want a timeout", err)
	}
	_ = rc.SetReadDeadline(time.Time{})

	// A read waiting for bytes gets them when they come.
	got := make(chan string, 1)
	go func() {
		n, err := rc.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	if _, err := server.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "late" {
		t.Fatalf("a waiting Read got %q, want late", s)
	}

	// The peer's close is io.EOF itself, not wrapped.
	server.Close()
	if n, err := rc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
	rc.Close()
	if _, err := rc.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v; want net.ErrClosed", err)
	}
}
