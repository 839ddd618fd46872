package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ping connects to addr, authenticates if user is set and sends PING.
func ping(ctx context.Context, addr, user, password string) error {
	var cmds [][]string
	if user != "" {
		cmds = append(cmds, []string{"AUTH", user, password})
	}
	replies, err := roundTrip(ctx, addr, append(cmds, []string{"PING"}))
	if err != nil {
		return err
	}
	if user != "" && replies[0] != "+OK" {
		return fmt.Errorf("AUTH %s: %q", user, replies[0])
	}
	if got := replies[len(replies)-1]; got != "+PONG" {
		return fmt.Errorf("PING: %q", got)
	}
	return nil
}

// flushAll empties the redis-server at addr (direct, no proxy).
func flushAll(ctx context.Context, addr string) error {
	replies, err := roundTrip(ctx, addr, [][]string{{"FLUSHALL"}})
	if err == nil && replies[0] != "+OK" {
		err = fmt.Errorf("%q", replies[0])
	}
	if err != nil {
		return fmt.Errorf("FLUSHALL on %s: %w", addr, err)
	}
	return nil
}

// roundTrip sends cmds on one connection to addr and returns one reply per
// command: status and error replies as their line ("+OK", "-ERR …"),
// integers as ":n", bulk strings as their content. Other reply types are an
// error; nothing here needs them.
func roundTrip(ctx context.Context, addr string, cmds [][]string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var req strings.Builder
	for _, args := range cmds {
		fmt.Fprintf(&req, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	replies := make([]string, 0, len(cmds))
	for range cmds {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return nil, fmt.Errorf("empty reply line")
		}
		switch line[0] {
		case '+', '-', ':':
			replies = append(replies, line)
		case '$':
			n, err := strconv.Atoi(line[1:])
			if err != nil {
				return nil, fmt.Errorf("bad bulk length %q", line)
			}
			if n < 0 {
				replies = append(replies, "(nil)")
				continue
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(r, buf); err != nil {
				return nil, err
			}
			replies = append(replies, string(buf[:n]))
		default:
			return nil, fmt.Errorf("unexpected reply %q", line)
		}
	}
	return replies, nil
}
