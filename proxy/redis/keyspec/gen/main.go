// Command gen writes keyspec's command table from a real redis-server's
// COMMAND INFO and COMMAND DOCS replies:
//
//	go run ./gen -out table_gen.go              # starts a throwaway redis-server
//	go run ./gen -addr 127.0.0.1:6379 -out x.go # asks a running one
//
// The throwaway server listens on a free 127.0.0.1 port with persistence off
// (--save "" --appendonly no) and is killed once the table is written. Flag
// and category names the keyspec package has no constant for make gen fail,
// so a new server version is reviewed rather than silently dropped.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

func main() {
	out := flag.String("out", "table_gen.go", "file to write")
	addr := flag.String("addr", "", "address of a running redis-server; empty starts a throwaway one")
	bin := flag.String("redis-server", "redis-server", "redis-server binary to start when -addr is empty")
	flag.Parse()
	if err := run(*out, *addr, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out, addr, bin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if addr == "" {
		srv, err := startServer(ctx, bin)
		if err != nil {
			return err
		}
		defer srv.stop()
		addr = srv.addr
	}
	c, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	src, err := generate(c)
	if err != nil {
		return err
	}
	return os.WriteFile(out, src, 0o644)
}

// server is a redis-server child started by startServer.
type server struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
	dir  string
}

// startServer starts redis-server on a free port with persistence off and
// waits until it answers PING; a port taken meanwhile makes it try another.
func startServer(ctx context.Context, bin string) (*server, error) {
	dir, err := os.MkdirTemp("", "keyspec-gen-")
	if err != nil {
		return nil, err
	}
	var errs []error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
		s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), done: make(chan struct{}), dir: dir}
		var log bytes.Buffer
		s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--daemonize", "no", "--dir", dir)
		s.cmd.Stdout, s.cmd.Stderr = &log, &log
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		if err := s.cmd.Start(); err != nil {
			return nil, errors.Join(fmt.Errorf("start %s: %w", bin, err), os.RemoveAll(dir))
		}
		go func() { _ = s.cmd.Wait(); close(s.done) }()
		err = s.waitReady(ctx)
		if err == nil {
			return s, nil
		}
		s.halt()
		errs = append(errs, fmt.Errorf("%w; log:\n%s", err, log.String()))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(append(errs, os.RemoveAll(dir))...)
}

// waitReady polls with PING every 10ms until the server answers, exits or
// ctx ends.
func (s *server) waitReady(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := dial(ctx, s.addr)
		if err == nil {
			var r any
			r, err = c.do("PING")
			c.Close()
			if err == nil && r == "PONG" {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("redis-server on %s exited during start-up", s.addr)
		case <-ctx.Done():
			return fmt.Errorf("redis-server on %s not ready: %w (last error: %v)", s.addr, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// halt kills the server and waits for it to exit.
func (s *server) halt() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// stop halts the server and removes its directory.
func (s *server) stop() {
	s.halt()
	_ = os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
