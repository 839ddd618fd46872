package netserve

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("NETSERVE_CHILD") != "" {
		os.Exit(childServer(os.Getenv("NETSERVE_CHILD")))
	}
	goleak.VerifyTestMain(m)
}

// childServer runs an acceptor under a low file-descriptor limit: it greets
// every connection it serves with "served", refuses with "refused", and
// holds served connections open until the peer closes them.
func childServer(limit string) int {
	n, _ := strconv.ParseUint(limit, 10, 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 2
	}
	fmt.Println(ln.Addr().String())
	var a Acceptor
	a.Refuse = func(c net.Conn) { _, _ = io.WriteString(c, "refused\n") }
	err = a.Serve(ln, func(c net.Conn) bool {
		if _, err := io.WriteString(c, "served\n"); err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, c)
		return false
	})
	fmt.Fprintln(os.Stderr, "serve returned:", err)
	return 1
}

// TestOutOfFileDescriptors runs an acceptor in a child process limited to
// 64 descriptors and opens many more connections than that: the process
// must neither exit nor spin, every connection must be either served or
// refused with a message (none left hanging), and once the clients leave,
// new ones are served again.
func TestOutOfFileDescriptors(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "NETSERVE_CHILD=64")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child did not start: %v; stderr: %s", err, stderr.String())
	}
	addr = strings.TrimSpace(addr)

	const clients = 150
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	served, refused := 0, 0
	for i := 0; i < clients; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		switch line := readLine(t, c); line {
		case "served":
			served++
		case "refused":
			refused++
		default:
			t.Fatalf("client %d: got %q, want served or refused", i, line)
		}
	}
	t.Logf("%d served, %d refused under a limit of 64 descriptors", served, refused)
	if served == 0 || refused == 0 {
		t.Fatalf("served %d, refused %d: want both", served, refused)
	}
	select {
	case err := <-exited:
		t.Fatalf("child exited while out of descriptors: %v; stderr: %s", err, stderr.String())
	default:
	}
	// Out of descriptors and idle, the accept loop must not spin.
	before := cpuTime(t, cmd.Process.Pid)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second) // one more, refused
	if err != nil {
		t.Fatal(err)
	}
	if line := readLine(t, c); line != "refused" {
		t.Fatalf("at the limit: got %q, want refused", line)
	}
	_ = c.Close()
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // a measuring window, not synchronisation
	}
	if used := cpuTime(t, cmd.Process.Pid) - before; used > 200*time.Millisecond {
		t.Errorf("child used %v of CPU in 500ms while idle at its descriptor limit: the accept loop spins", used)
	}

	for _, c := range conns {
		_ = c.Close()
	}
	conns = nil
	// The child notices the closes asynchronously: poll until served again.
	deadline = time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		line := readLine(t, c)
		_ = c.Close()
		if line == "served" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %q 10s after the clients left", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read: %v (the connection hangs instead of being served or refused)", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return strings.TrimSpace(line)
}

// cpuTime reads a process's user+system CPU time from /proc.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func TestCaps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := NewBudget(3)
	a := &Acceptor{MaxConns: 2, Budget: b, Refuse: func(c net.Conn) { _, _ = io.WriteString(c, "refused\n") }}
	done := make(chan error, 1)
	release := make(chan struct{})
	go func() {
		done <- a.Serve(ln, func(c net.Conn) bool {
			_, _ = io.WriteString(c, "served\n")
			<-release
			return false
		})
	}()
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	got := []string{readLine(t, conns[0]), readLine(t, conns[1]), readLine(t, conns[2])}
	if got[0] != "served" || got[1] != "served" || got[2] != "refused" {
		t.Fatalf("with MaxConns 2: %v, want served served refused", got)
	}
	if a.Open() != 2 || a.Refused() != 1 || b.InUse() != 2 {
		t.Fatalf("open %d refused %d budget in use %d, want 2 1 2", a.Open(), a.Refused(), b.InUse())
	}
	close(release)
	for _, c := range conns {
		_ = c.Close()
	}
	a.Drain()
	a.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b.InUse() != 0 || a.Open() != 0 {
		t.Fatalf("after drain: budget in use %d, open %d", b.InUse(), a.Open())
	}
}

// TestPark: a handler parks its connection and returns; bytes from the
// peer resume it in a new goroutine, as does Wake; the connection stays
// counted while parked, and Wait stops the parking loop (goleak checks).
func TestPark(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var a Acceptor
	type event struct {
		what string
		n    int
	}
	events := make(chan event, 16)
	var handle func(c net.Conn) bool
	handle = func(c net.Conn) bool {
		buf := make([]byte, 16)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := c.Read(buf)
		_ = c.SetReadDeadline(time.Time{})
		switch {
		case err == nil:
			events <- event{"read", n}
			_, _ = c.Write(buf[:n])
		case errors.Is(err, os.ErrDeadlineExceeded):
			if a.Park(c, handle) {
				events <- event{"parked", 0}
				return true
			}
			events <- event{"park refused", 0}
		default:
			events <- event{"closed", 0}
			return false
		}
		return handle(c)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ln, handle) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if e := <-events; e.what != "parked" {
		t.Fatalf("idle handler: %v, want parked", e)
	}
	if a.Open() != 1 {
		t.Fatalf("a parked connection is not counted: %d open", a.Open())
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if e := <-events; e.what != "read" || e.n != 4 {
		t.Fatalf("after bytes arrived: %v, want a read of 4", e)
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(c, echo); err != nil || string(echo) != "ping" {
		t.Fatalf("echo: %q %v", echo, err)
	}
	if e := <-events; e.what != "parked" {
		t.Fatalf("idle again: %v, want parked", e)
	}
	// Wake resumes it without bytes: it times out and parks again.
	a.Wake(c2(t, &a, c))
	if e := <-events; e.what != "parked" {
		t.Fatalf("after Wake: %v, want parked again", e)
	}
	_ = c.Close()
	if e := <-events; e.what != "closed" {
		t.Fatalf("after the peer closed: %v", e)
	}
	a.Drain()
	a.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// c2 finds the server side of client connection c among a's parked ones.
func c2(t *testing.T, a *Acceptor, c net.Conn) net.Conn {
	t.Helper()
	a.parker.mu.Lock()
	defer a.parker.mu.Unlock()
	for _, pc := range a.parker.parked {
		if pc.conn.RemoteAddr().String() == c.LocalAddr().String() {
			return pc.conn
		}
	}
	t.Fatal("connection not parked")
	return nil
}

// TestMaxConnsPerSource: with a cap of 2 per source address, a third
// connection from 127.0.0.2 is refused with RefuseSource's message while
// 127.0.0.3 (another app pod of a gateway) is still served; a slot
// freed by 127.0.0.2 serves it again.
func TestMaxConnsPerSource(t *testing.T) {
	probe, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9})
	if err != nil && strings.Contains(err.Error(), "assign requested address") {
		t.Skip("this system's loopback has only 127.0.0.1")
	}
	if probe != nil {
		_ = probe.Close()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &Acceptor{MaxConnsPerSource: 2,
		Refuse:       func(c net.Conn) { _, _ = io.WriteString(c, "refused\n") },
		RefuseSource: func(c net.Conn) { _, _ = io.WriteString(c, "refused: source\n") },
	}
	done := make(chan error, 1)
	go func() {
		done <- a.Serve(ln, func(c net.Conn) bool {
			if _, err := io.WriteString(c, "served\n"); err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, c)
			return false
		})
	}()
	t.Cleanup(func() { // after the clients' own cleanups have closed them
		a.Drain()
		if err := <-done; err != nil {
			t.Error(err)
		}
		a.Wait()
	})
	dial := func(src string) (net.Conn, string) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		return c, strings.TrimSpace(line)
	}
	first, got := dial("127.0.0.2")
	if got != "served" {
		t.Fatalf("first from 127.0.0.2: %q", got)
	}
	if _, got := dial("127.0.0.2"); got != "served" {
		t.Fatalf("second from 127.0.0.2: %q", got)
	}
	if _, got := dial("127.0.0.2"); got != "refused: source" {
		t.Fatalf("third from 127.0.0.2: %q, want the per-source refusal", got)
	}
	if _, got := dial("127.0.0.3"); got != "served" {
		t.Fatalf("first from 127.0.0.3 next to a full 127.0.0.2: %q", got)
	}
	if n := a.Sources(); n != 2 {
		t.Errorf("Sources() = %d, want 2", n)
	}
	if n := a.RefusedPerSource(); n != 1 {
		t.Errorf("RefusedPerSource() = %d, want 1", n)
	}
	_ = first.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, got := dial("127.0.0.2")
		if got == "served" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("127.0.0.2 after closing a connection: %q", got)
		}
	}
}
