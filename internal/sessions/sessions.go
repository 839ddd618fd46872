// Package sessions opens the session store and the token verifier from the
// `sessions:` configuration section, for ext_authz and the sidecar alike.
package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/config/sections"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// Client returns a go-redis client for the session store. Timeouts are
// short: a store that does not answer makes verification fail closed
// rather than hang a login. A rediss:// store is dialled with tls, whose
// files are re-read when they change.
func Client(url string, tls *tlsconf.Client) (*goredis.Client, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("session store url: %w", err)
	}
	opt.DisableIdentity = true
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = 2 * time.Second
	opt.WriteTimeout = 2 * time.Second
	opt.MaxRetries = 1
	if opt.TLSConfig != nil {
		if tls == nil {
			return nil, errors.New("session store url: rediss:// needs the store's TLS settings")
		}
		// go-redis would dial with the fixed opt.TLSConfig; the dialer
		// takes the current files' at every connection instead.
		opt.TLSConfig = nil
		timeout := opt.DialTimeout
		opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return tls.DialContext(ctx, network, addr)
		}
	}
	return goredis.NewClient(opt), nil
}

// Config turns the configuration section into the session package's.
func Config(s *sections.Sessions) session.Config {
	return session.Config{TTL: s.TTL, MaxAge: s.MaxAge, Grace: s.Grace}
}

// Verifier is an open verifier and the client it owns.
type Verifier struct {
	*session.Verifier
	RDB *goredis.Client
}

// Open connects (lazily) to the store and starts a verifier.
func Open(s *sections.Sessions, reg prometheus.Registerer, log *slog.Logger) (*Verifier, error) {
	var tc *tlsconf.Client
	if s.StoreTLS != nil {
		var err error
		if tc, err = tlsconf.NewClient(*s.StoreTLS, tlsconf.Options{Name: "session-store-client", Logger: log.With("component", "tls")}); err != nil {
			return nil, fmt.Errorf("sessions.tls: %w", err)
		}
		if tc.HasCertificate() {
			if err := tlsconf.RegisterExpiry(reg, "session-store-client", tc.NotAfter); err != nil {
				return nil, err
			}
		}
	}
	rdb, err := Client(s.StoreURL, tc)
	if err != nil {
		return nil, err
	}
	tv, err := token.NewVerifier(s.VerificationKeys...)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	v, err := session.NewVerifier(rdb, tv, Config(s), reg, log)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return &Verifier{Verifier: v, RDB: rdb}, nil
}

// Close stops the verifier and closes its client.
func (v *Verifier) Close() error {
	return errors.Join(v.Verifier.Close(), v.RDB.Close())
}
