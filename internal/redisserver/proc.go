package redisserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"github.com/tenantguard/tenantguard/internal/childproc"
	"net"
	"os"
	"strings"
	"time"
)

// clientConfig verifies the server with CAFile and, when clients must
// present one, presents the server's own certificate (tests sign both
// with one CA).
func (t *TLS) clientConfig() (*tls.Config, error) {
	ca, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no certificate", t.CAFile)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if t.RequireClientCert {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// readyTimeout bounds start-up when ctx has no deadline.
const readyTimeout = 30 * time.Second

// waitReady polls addr with PING until it answers +PONG.
func waitReady(ctx context.Context, addr string, tc *TLS, p *childproc.Process) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readyTimeout)
		defer cancel()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(ctx, addr, tc)
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

// ping sends one inline PING command and checks the reply, over TLS
// with tc.
func ping(ctx context.Context, addr string, tc *TLS) error {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if tc != nil {
		cfg, err := tc.clientConfig()
		if err != nil {
			_ = conn.Close()
			return err
		}
		t := tls.Client(conn, cfg)
		if err := t.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return err
		}
		conn = t
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
