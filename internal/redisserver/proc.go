package redisserver

import (
	"bufio"
	"context"
	"fmt"
	"github.com/tenantguard/tenantguard/internal/childproc"
	"net"
	"strings"
	"time"
)

// readyTimeout bounds start-up when ctx has no deadline.
const readyTimeout = 30 * time.Second

// waitReady polls addr with PING until it answers +PONG.
func waitReady(ctx context.Context, addr string, p *childproc.Process) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readyTimeout)
		defer cancel()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(ctx, addr)
		if err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("redis-server exited during start-up: %w", p.Err())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", addr, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// ping sends one inline PING command and checks the reply.
func ping(ctx context.Context, addr string) error {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("unexpected PING reply %q", strings.TrimSpace(line))
	}
	return nil
}
