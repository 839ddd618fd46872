package session

import (
	"encoding/hex"
	"time"

	"github.com/tenantguard/tenantguard/extauthz/token"
)

// Defaults for the zero fields of Config.
const (
	DefaultTTL          = 15 * time.Minute
	DefaultMaxAge       = 12 * time.Hour
	DefaultKeyPrefix    = "tg:session:"
	DefaultChannel      = "tg:session:revoked"
	DefaultCacheEntries = 100_000
)

// analyticsRetention is how long a session's analytics keys outlive its
// maximum expiry, so an ended session can still be inspected.
const analyticsRetention = 24 * time.Hour

// Config configures a Store and a Verifier. Both sides of one deployment
// must agree on KeyPrefix and Channel. The zero value is ready to use.
type Config struct {
	// TTL is a token's lifetime; Refresh extends a session by TTL. Default
	// 15m; at least one second.
	TTL time.Duration
	// MaxAge caps a session's life from its creation; Refresh never goes
	// past it. Default 12h.
	MaxAge time.Duration
	// Grace: 0 fails closed as soon as the store is unreachable; otherwise
	// verdicts cached before the outage keep working for this long after it
	// began (never for tokens not seen before), and open leases end then.
	Grace time.Duration
	// KeyPrefix starts every Redis key; default "tg:session:".
	KeyPrefix string
	// Channel is the revocation pub/sub channel; default "tg:session:revoked".
	Channel string
	// CacheEntries is the verdict cache's capacity in tokens; default 100000.
	CacheEntries int64
	// ClockSkew, if positive, is set on the Verifier's token.Verifier; if
	// zero that verifier keeps its own (token.DefaultClockSkew for one from
	// token.NewVerifier).
	ClockSkew time.Duration
	// Now is the clock, for tests; default time.Now. Token times, Redis
	// expiries and analytics minutes all come from it.
	Now func() time.Time
}

// withDefaults returns c with its zero fields filled in.
func (c Config) withDefaults() Config {
	if c.TTL < time.Second {
		c.TTL = DefaultTTL
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Grace < 0 {
		c.Grace = 0
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.Channel == "" {
		c.Channel = DefaultChannel
	}
	if c.CacheEntries <= 0 {
		c.CacheEntries = DefaultCacheEntries
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// keys names the Redis keys under one prefix.
type keys struct{ prefix string }

func (k keys) session(id string) string      { return k.prefix + id }
func (k keys) tenant(t string) string        { return k.prefix + "tenant:" + t }
func (k keys) stats(id string) string        { return k.prefix + id + ":stats" }
func (k keys) fingerprints(id string) string { return k.prefix + id + ":fp" }
func (k keys) minutes(id string) string      { return k.prefix + id + ":min" }
func (k keys) active() string                { return k.prefix + "active" }

// validID reports whether id is a session id as SessionID.String writes
// it: 32 lower-case hex digits. Ids from outside are checked before they
// become part of a key, so "x:stats" cannot name another key.
func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// parseID turns a valid id back into a SessionID.
func parseID(id string) (token.SessionID, bool) {
	var s token.SessionID
	if !validID(id) {
		return s, false
	}
	if _, err := hex.Decode(s[:], []byte(id)); err != nil {
		return s, false
	}
	return s, !s.IsZero()
}
