package resp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startRedis starts a redis-server on a free port for the test and returns
// its address; the server is killed when the test ends. It skips the test
// if redis-server is not installed.
func startRedis(t *testing.T, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed")
	}
	for attempt := 0; attempt < 5; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", t.TempDir(), "--enable-debug-command", "yes"}, extra...)
		cmd := exec.Command(bin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ready, exitErr, died := waitReady(addr, exited, 10*time.Second)
		if ready {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return addr
		}
		if died { // most likely the port was taken meanwhile: try another
			t.Logf("redis-server on port %d exited (%v): %s", port, exitErr, out.String())
			continue
		}
		cmd.Process.Kill()
		<-exited
		t.Fatalf("redis-server on port %d not ready: %s", port, out.String())
	}
	t.Fatal("could not start redis-server")
	return ""
}

// waitReady polls addr with PING until the server answers (+PONG, or
// -NOAUTH when it requires a password), the process exits or the deadline
// passes.
func waitReady(addr string, exited <-chan error, within time.Duration) (ready bool, exitErr error, died bool) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return false, err, true
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			c.Write([]byte("PING\r\n"))
			rep, err := NewReplyReader(c, 0).ReadReply()
			ok := err == nil && (dump(rep.Root()) == "+PONG" || strings.HasPrefix(dump(rep.Root()), "-NOAUTH"))
			c.Close()
			if ok {
				return true, nil, false
			}
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
	return false, nil, false
}

// session sends in on a new connection and reads replies with ReplyReader
// until n have arrived or the server closes the connection.
func session(t *testing.T, addr string, in []byte, n int) (replies []string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write(in) // redis may close before reading it all
	r := NewReplyReader(c, 0)
	for len(replies) < n {
		rep, err := r.ReadReply()
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return replies, true
		}
		if err != nil {
			t.Fatalf("reading replies to %.60q: %v", in, err)
		}
		replies = append(replies, string(rep.Raw()))
	}
	return replies, false
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

var lrangeL = AppendCommand(nil, [][]byte{[]byte("LRANGE"), []byte("l"), []byte("0"), []byte("-1")})
var delL = AppendCommand(nil, [][]byte{[]byte("DEL"), []byte("l")})

// TestInlineMatchesRedis sends each inline case to redis-server as
// "RPUSH l <line>" and reads back what it stored with a multibulk LRANGE.
func TestInlineMatchesRedis(t *testing.T) {
	addr := startRedis(t)
	for _, tc := range inlineCases {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Concat(delL, []byte("RPUSH l "+tc.line+"\r\n"), lrangeL)
			replies, _ := session(t, addr, in, 3)
			if tc.bad {
				// DEL's reply, then the error; redis then closes.
				if len(replies) != 2 || replies[1] != "-"+ErrUnbalancedQuotes.Error()+"\r\n" {
					t.Fatalf("redis replied %q, want the unbalanced quotes error", replies)
				}
				if _, err := readAll(NewReader(bytes.NewReader(in), 0)); err != ErrUnbalancedQuotes {
					t.Fatalf("Reader: %v", err)
				}
				return
			}
			if len(replies) != 3 {
				t.Fatalf("redis replied %q", replies)
			}
			var rep Reply
			if _, err := rep.Parse([]byte(replies[2])); err != nil {
				t.Fatal(err)
			}
			var stored []string
			for it := rep.Root().Iter(); it.Next(); {
				stored = append(stored, string(it.Value().Bytes()))
			}
			if !slices.Equal(stored, tc.want) {
				t.Fatalf("redis stored %q, want %q", stored, tc.want)
			}
			// And the Reader reads the same bytes the same way.
			cmds, err := readAll(NewReader(bytes.NewReader(in), 0))
			if err != io.EOF || len(cmds) != 3 || !slices.Equal(cmds[1][2:], stored) {
				t.Fatalf("Reader: %q, %v", cmds, err)
			}
		})
	}
}

// TestInlineSkipsMatchRedis checks that redis-server ignores the lines the
// Reader skips, and accepts the longest line the Reader accepts.
func TestInlineSkipsMatchRedis(t *testing.T) {
	addr := startRedis(t)
	in := strings.Join(skippedLines, "") + "PING\r\n" + "*0\r\n*-1\r\n*-5\r\n" + "ECHO end\r\n"
	replies, _ := session(t, addr, []byte(in), 2)
	if !slices.Equal(replies, []string{"+PONG\r\n", "$3\r\nend\r\n"}) {
		t.Fatalf("redis replied %q", replies)
	}
	cmds, err := readAll(NewReader(strings.NewReader(in), 0))
	if err != io.EOF || len(cmds) != 2 {
		t.Fatalf("Reader: %q, %v", cmds, err)
	}

	max := DefaultLimits().MaxInlineLen
	long := "ECHO " + strings.Repeat("x", max-6) + "\r\n" // max bytes before the LF
	replies, _ = session(t, addr, []byte(long), 1)
	if len(replies) != 1 || !strings.HasPrefix(replies[0], "$"+strconv.Itoa(max-6)+"\r\n") {
		t.Fatalf("redis replied %.60q", replies)
	}
	if _, err := readAll(NewReader(strings.NewReader(long), 0)); err != io.EOF {
		t.Fatalf("Reader: %v", err)
	}
}

// TestProtocolErrorsMatchRedis checks every protocol error message against
// what redis-server replies before closing the connection.
func TestProtocolErrorsMatchRedis(t *testing.T) {
	check := func(t *testing.T, addr, in, want string, lim Limits) {
		replies, closed := session(t, addr, []byte(in), 2)
		if len(replies) != 1 || replies[0] != "-"+want+"\r\n" || !closed {
			t.Fatalf("redis replied %q (closed %v), want %q", replies, closed, want)
		}
		r := NewReader(strings.NewReader(in), 0)
		r.SetLimits(lim)
		_, err := r.ReadCommand()
		var pe *ProtocolError
		if !errors.As(err, &pe) || string(pe.AppendReply(nil)) != replies[0] {
			t.Fatalf("Reader: %v, redis: %q", err, replies[0])
		}
	}
	t.Run("default", func(t *testing.T) {
		addr := startRedis(t)
		for _, tc := range multibulkErrorCases {
			t.Run(tc.name, func(t *testing.T) { check(t, addr, tc.in, tc.err, DefaultLimits()) })
		}
	})
	t.Run("requirepass", func(t *testing.T) {
		addr := startRedis(t, "--requirepass", "secret")
		for _, tc := range preAuthErrorCases {
			t.Run(tc.name, func(t *testing.T) { check(t, addr, tc.in, tc.err, PreAuthLimits()) })
		}
		// The same inputs are fine once authenticated (they then wait for
		// more input, so check a complete command of the same shape).
		auth := "AUTH secret\r\n*11\r\n" + strings.Repeat("$1\r\nx\r\n", 11) +
			"*2\r\n$4\r\nECHO\r\n$16385\r\n" + strings.Repeat("y", 16385) + "\r\n"
		replies, _ := session(t, addr, []byte(auth), 3)
		if len(replies) != 3 || replies[0] != "+OK\r\n" || !strings.HasPrefix(replies[2], "$16385\r\n") {
			t.Fatalf("redis replied %.80q", replies)
		}
	})
}

// TestStricterThanRedis records inputs redis-server accepts or stalls on
// that the Reader refuses (see stricterCases).
func TestStricterThanRedis(t *testing.T) {
	addr := startRedis(t)
	for _, tc := range stricterCases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if tc.err == ErrInlineNUL {
				// redis-server's strchr stops at the NUL, so it never sees
				// the newline and waits for more, until it has too much.
				in += strings.Repeat("x", 70000)
			}
			replies, _ := session(t, addr, []byte(in), len(tc.redis))
			t.Logf("redis-server replied %q; the Reader: %v", replies, tc.err)
			if !slices.Equal(replies, tc.redis) {
				t.Fatalf("redis-server replied %q, expected %q", replies, tc.redis)
			}
			if _, err := NewReader(strings.NewReader(tc.in), 0).ReadCommand(); err != tc.err {
				t.Fatalf("Reader: %v, want %v", err, tc.err)
			}
		})
	}
}

// TestRepliesFromRedis reads real RESP2 and RESP3 replies of every type
// redis-server 7 sends (DEBUG PROTOCOL covers attributes and pushes) from
// the TCP stream, checks each re-encodes to its exact bytes, and checks
// their trees.
func TestRepliesFromRedis(t *testing.T) {
	addr := startRedis(t)
	cmd := func(args ...string) []byte {
		b := make([][]byte, len(args))
		for i, a := range args {
			b[i] = []byte(a)
		}
		return AppendCommand(nil, b)
	}
	type step struct {
		cmd  []byte
		dump string // "" to check only that it parses and re-encodes
	}
	common := []step{
		{cmd("FLUSHALL"), "+OK"},
		{cmd("SET", "t1:k", "v"), "+OK"},
		{cmd("GET", "t1:k"), "v"},
		{cmd("INCR", "t1:n"), ":1"},
		{cmd("RPUSH", "t1:l", "a", "", "c"), ":3"},
		{cmd("LRANGE", "t1:l", "0", "-1"), "[a  c]"},
		{cmd("KEYS", "t1:[kl]"), ""},
		{cmd("BLPOP", "t1:l", "0"), "[t1:l a]"},
		{cmd("XADD", "t1:s", "1-1", "f", "v"), "1-1"},
		{cmd("HSET", "t1:h", "f", "v"), ":1"},
		{cmd("SADD", "t1:set", "m"), ":1"},
		{cmd("ZADD", "t1:z", "1.5", "m"), ":1"},
		{cmd("NOSUCH"), "-ERR unknown command 'NOSUCH', with args beginning with: "},
		{cmd("INFO", "server"), ""},
		{cmd("COMMAND", "INFO", "GET"), ""},
		{cmd("SCAN", "0", "MATCH", "t1:*", "COUNT", "100"), ""},
		{cmd("DEBUG", "PROTOCOL", "string"), "Hello World"},
		{cmd("DEBUG", "PROTOCOL", "integer"), ":12345"},
		{cmd("DEBUG", "PROTOCOL", "array"), "[:0 :1 :2]"},
	}
	resp2 := append(slices.Clone(common),
		step{cmd("XREAD", "STREAMS", "t1:s", "0"), "[[t1:s [[1-1 [f v]]]]]"},
		step{cmd("HGETALL", "t1:h"), "[f v]"},
		step{cmd("ZSCORE", "t1:z", "m"), "1.5"},
		step{cmd("GET", "t1:missing"), "nil"},
		step{cmd("LPOP", "t1:missing", "2"), "nil"},
		step{cmd("DEBUG", "PROTOCOL", "null"), "nil"},
		step{cmd("DEBUG", "PROTOCOL", "map"), "[:0 :0 :1 :1 :2 :0]"},
	)
	resp3 := append([]step{{cmd("HELLO", "3"), ""}}, common...)
	resp3 = append(resp3,
		step{cmd("XREAD", "STREAMS", "t1:s", "0"), "{t1:s:[[1-1 [f v]]]}"},
		step{cmd("HGETALL", "t1:h"), "{f:v}"},
		step{cmd("SMEMBERS", "t1:set"), "~[m]"},
		step{cmd("ZSCORE", "t1:z", "m"), ",1.5"},
		step{cmd("GET", "t1:missing"), "nil"},
		step{cmd("LPOP", "t1:missing", "2"), "nil"},
		step{cmd("CLIENT", "INFO"), ""},
		step{cmd("DEBUG", "PROTOCOL", "null"), "nil"},
		step{cmd("DEBUG", "PROTOCOL", "map"), "{:0:#f :1:#t :2:#f}"},
		step{cmd("DEBUG", "PROTOCOL", "set"), "~[:0 :1 :2]"},
		step{cmd("DEBUG", "PROTOCOL", "double"), ",3.141"},
		step{cmd("DEBUG", "PROTOCOL", "bignum"), "(1234567999999999999999999999999999999"},
		step{cmd("DEBUG", "PROTOCOL", "true"), "#t"},
		step{cmd("DEBUG", "PROTOCOL", "false"), "#f"},
		step{cmd("DEBUG", "PROTOCOL", "verbatim"), "=txt:This is a verbatim\nstring"},
		step{cmd("DEBUG", "PROTOCOL", "attrib"), "|{key-popularity:[key:123 :90]}Some real reply following the attribute"},
		step{cmd("DEBUG", "PROTOCOL", "push"), ">[server-cpu-usage :42]"},
		step{nil, "Some real reply following the push reply"},
		step{cmd("EVAL", "redis.setresp(3); return {big_number='abc'}", "0"), "(abc"},
		step{cmd("EVAL", "redis.setresp(3); return {verbatim_string={format='markdown', string='x'}}", "0"), "=mar:x"},
	)
	for _, proto := range []struct {
		name  string
		steps []step
	}{{"RESP2", resp2}, {"RESP3", resp3}} {
		t.Run(proto.name, func(t *testing.T) {
			var in []byte
			for _, s := range proto.steps {
				in = append(in, s.cmd...)
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(in); err != nil {
				t.Fatal(err)
			}
			r := NewReplyReader(c, 64) // small, to exercise growth and split reads
			for _, s := range proto.steps {
				rep, err := r.ReadReply()
				if err != nil {
					t.Fatalf("reply to %q: %v", s.cmd, err)
				}
				if enc := encodeValue(nil, rep.Root()); !bytes.Equal(enc, rep.Raw()) {
					t.Fatalf("reply to %q: %q re-encoded as %q", s.cmd, rep.Raw(), enc)
				}
				if got := dump(rep.Root()); s.dump != "" && got != s.dump {
					t.Fatalf("reply to %q: %q, want %q", s.cmd, got, s.dump)
				}
			}
		})
	}
}

// TestPubSubPushFromRedis rewrites the channel name in a real RESP3
// message push and checks the edited bytes parse as expected.
func TestPubSubPushFromRedis(t *testing.T) {
	addr := startRedis(t)
	sub, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sub.SetDeadline(time.Now().Add(10 * time.Second))
	sub.Write([]byte("HELLO 3\r\nSUBSCRIBE t1:news\r\n"))
	r := NewReplyReader(sub, 0)
	for _, want := range []string{"", ">[subscribe t1:news :1]"} {
		rep, err := r.ReadReply()
		if err != nil {
			t.Fatal(err)
		}
		if want != "" && dump(rep.Root()) != want {
			t.Fatalf("got %q, want %q", dump(rep.Root()), want)
		}
	}
	// Publish until the subscriber is known to be registered (it is, once
	// its SUBSCRIBE reply arrived), from another connection.
	replies, _ := session(t, addr, []byte("PUBLISH t1:news hello\r\n"), 1)
	if len(replies) != 1 || replies[0] != ":1\r\n" {
		t.Fatalf("PUBLISH: %q", replies)
	}
	rep, err := r.ReadReply()
	if err != nil {
		t.Fatal(err)
	}
	root := rep.Root()
	if root.Type() != TypePush || dump(root) != ">[message t1:news hello]" {
		t.Fatalf("push %q", rep.Raw())
	}
	ch := root.Index(1)
	out, err := rep.AppendEdited(nil, []Edit{{At: ch, Data: bytes.TrimPrefix(ch.Bytes(), []byte("t1:"))}})
	if want := ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"; err != nil || string(out) != want {
		t.Fatalf("edited %q, %v; want %q", out, err, want)
	}
}
