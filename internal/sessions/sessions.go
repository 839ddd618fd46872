// Package sessions opens the session store and the token verifier from the
// `sessions:` configuration section, for ext_authz and the sidecar alike.
package sessions

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/config"
)

// Client returns a go-redis client for the session store. Timeouts are
// short: a store that does not answer makes verification fail closed
// rather than hang a login.
func Client(url string) (*goredis.Client, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("session store url: %w", err)
	}
	opt.DisableIdentity = true
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = 2 * time.Second
	opt.WriteTimeout = 2 * time.Second
	opt.MaxRetries = 1
	return goredis.NewClient(opt), nil
}

// Config turns the configuration section into the session package's.
func Config(s *config.Sessions) session.Config {
	return session.Config{TTL: s.TTL, MaxAge: s.MaxAge, Grace: s.Grace}
}

// Verifier is an open verifier and the client it owns.
type Verifier struct {
	*session.Verifier
	RDB *goredis.Client
}

// Open connects (lazily) to the store and starts a verifier.
func Open(s *config.Sessions, reg prometheus.Registerer, log *slog.Logger) (*Verifier, error) {
	rdb, err := Client(s.StoreURL)
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
