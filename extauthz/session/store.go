package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/policy"

	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/extauthz/token"
)

// Errors of the Store. Other errors (Redis unreachable) wrap the
// underlying error.
var (
	// ErrNotFound: the session is unknown, revoked or expired.
	ErrNotFound = errors.New("session not found")
	// ErrMaxAge: a refresh was refused because the session has reached its
	// maximum age; the user has to sign in again.
	ErrMaxAge = errors.New("session has reached its maximum age")
)

// Session describes one session. It never holds a token.
type Session struct {
	ID           string    `json:"session_id"`
	Tenant       string    `json:"tenant_id"`
	User         string    `json:"user_id"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"` // expiry of the newest token
	MaxExpiresAt time.Time `json:"max_expires_at"`
	RefreshedAt  time.Time `json:"refreshed_at,omitzero"`
	KeyID        string    `json:"key_id"` // key that signed the newest token
}

// Store issues, refreshes, lists and revokes sessions in Redis. It is the
// issuing side; it starts no goroutines and is safe for concurrent use.
type Store struct {
	rdb  *redis.Client
	key  atomic.Pointer[token.SigningKey]
	life atomic.Pointer[lifetimes] // TTL and MaxAge; SetLifetimes swaps them
	cfg  Config
	keys keys
}

// lifetimes are the token lifetime and the session age cap that Create and
// Refresh apply, read together so that a concurrent SetLifetimes never
// pairs one call's TTL with another's MaxAge.
type lifetimes struct{ ttl, maxAge time.Duration }

// NewStore returns a Store signing with key (Create and Refresh fail
// while it is nil).
func NewStore(rdb *redis.Client, key *token.SigningKey, cfg Config) *Store {
	cfg = cfg.withDefaults()
	s := &Store{rdb: rdb, cfg: cfg, keys: keys{cfg.KeyPrefix}}
	s.key.Store(key)
	s.life.Store(&lifetimes{ttl: cfg.TTL, maxAge: cfg.MaxAge})
	return s
}

// SetLifetimes makes ttl the lifetime of every token issued from now on
// (by Create and Refresh) and maxAge the age cap of sessions created from
// now on. A session keeps the cap it was created with: Refresh never moves
// a stored MaxExpiresAt. It fails, changing nothing, unless
// maxAge >= ttl >= 1s.
func (s *Store) SetLifetimes(ttl, maxAge time.Duration) error {
	if ttl < time.Second {
		return fmt.Errorf("session ttl %s: must be at least 1s", ttl)
	}
	if maxAge < ttl {
		return fmt.Errorf("session max_age %s: must not be shorter than the ttl %s", maxAge, ttl)
	}
	s.life.Store(&lifetimes{ttl: ttl, maxAge: maxAge})
	return nil
}

// Lifetimes returns the token lifetime and the session age cap in force.
func (s *Store) Lifetimes() (ttl, maxAge time.Duration) {
	l := s.life.Load()
	return l.ttl, l.maxAge
}

// SetSigningKey makes k sign every token issued from now on (key rotation:
// add k's public key to every verifier first).
func (s *Store) SetSigningKey(k *token.SigningKey) { s.key.Store(k) }

// createScript stores a new session and indexes it under its tenant.
//
//	KEYS: session hash, tenant zset
//	ARGV: tenant, user, created, expires, max_expires, kid (unix s),
//	      expires (unix ms), now (unix ms), id
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'user', ARGV[2], 'created', ARGV[3],
  'expires', ARGV[4], 'max_expires', ARGV[5], 'kid', ARGV[6])
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[9])
local cur = redis.call('PEXPIRETIME', KEYS[2])
if cur < 0 or cur < tonumber(ARGV[7]) then redis.call('PEXPIREAT', KEYS[2], ARGV[7]) end
return 1
`)

// refreshScript moves a live session's expiry forward (never back: two
// concurrent refreshes both keep working). It does nothing, and returns 0,
// if the session is gone, so a refresh cannot revive a revoked session.
//
//	KEYS: session hash, tenant zset
//	ARGV: tenant, expires (unix s), refreshed (unix s), kid, expires (unix ms), id
var refreshScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[1] then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'expires'))
if tonumber(ARGV[2]) > cur then
  redis.call('HSET', KEYS[1], 'expires', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
  local zt = redis.call('PEXPIRETIME', KEYS[2])
  if zt < 0 or zt < tonumber(ARGV[5]) then redis.call('PEXPIREAT', KEYS[2], ARGV[5]) end
end
redis.call('HSET', KEYS[1], 'refreshed', ARGV[3], 'kid', ARGV[4])
return 1
`)

// revokeScript deletes sessions and publishes each one that existed.
//
//	KEYS: tenant zset, then one session hash per id
//	ARGV: channel, then the ids
var revokeScript = redis.NewScript(`
local n = 0
for i = 2, #KEYS do
  local id = ARGV[i]
  if redis.call('DEL', KEYS[i]) == 1 then
    redis.call('PUBLISH', ARGV[1], id)
    n = n + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
return n
`)

// Create starts a session for user in tenant and returns it with its first
// token. Invalid ids fail wrapping token.ErrInvalidClaims.
func (s *Store) Create(ctx context.Context, tenant, user string) (Session, string, error) {
	if !policy.ValidTenantID(tenant) {
		return Session{}, "", fmt.Errorf("%w: tenant id %q does not match ^[a-z0-9][a-z0-9_-]{0,62}$", token.ErrInvalidClaims, tenant)
	}
	now := s.cfg.Now()
	life := s.life.Load()
	c, err := token.NewClaims(tenant, user, now, min(life.ttl, life.maxAge))
	if err != nil {
		return Session{}, "", err
	}
	k := s.key.Load()
	if k == nil {
		return Session{}, "", errors.New("create session: the store has no signing key")
	}
	tok, err := k.Sign(c)
	if err != nil {
		return Session{}, "", err
	}
	ss := Session{
		ID: c.SessionID.String(), Tenant: tenant, User: user,
		CreatedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt,
		MaxExpiresAt: c.IssuedAt.Add(life.maxAge).Truncate(time.Second),
		KeyID:        k.ID(),
	}
	ok, err := createScript.Run(ctx, s.rdb,
		[]string{s.keys.session(ss.ID), s.keys.tenant(tenant)},
		tenant, user, ss.CreatedAt.Unix(), ss.ExpiresAt.Unix(), ss.MaxExpiresAt.Unix(), ss.KeyID,
		ss.ExpiresAt.UnixMilli(), now.UnixMilli(), ss.ID).Int()
	if err != nil {
		return Session{}, "", fmt.Errorf("create session: %w", err)
	}
	if ok != 1 { // a 128-bit random id collided: never in practice
		return Session{}, "", fmt.Errorf("create session: id %s already in use", ss.ID)
	}
	return ss, tok, nil
}

// Get returns a live session.
func (s *Store) Get(ctx context.Context, id string) (Session, error) {
	if !validID(id) {
		return Session{}, ErrNotFound
	}
	h, err := s.rdb.HGetAll(ctx, s.keys.session(id)).Result()
	if err != nil {
		return Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	return s.live(id, h)
}

// live turns a session hash into a Session, or ErrNotFound if it is empty
// or expired by the Store's clock.
func (s *Store) live(id string, h map[string]string) (Session, error) {
	if len(h) == 0 {
		return Session{}, ErrNotFound
	}
	ss, err := parseSession(id, h)
	if err != nil {
		return Session{}, err
	}
	if !s.cfg.Now().Before(ss.ExpiresAt) {
		return Session{}, ErrNotFound
	}
	return ss, nil
}

// parseSession decodes a session hash.
func parseSession(id string, h map[string]string) (Session, error) {
	ss := Session{ID: id, Tenant: h["tenant"], User: h["user"], KeyID: h["kid"]}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"created", &ss.CreatedAt}, {"expires", &ss.ExpiresAt}, {"max_expires", &ss.MaxExpiresAt}, {"refreshed", &ss.RefreshedAt}} {
		v, ok := h[f.name]
		if !ok && f.name == "refreshed" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Session{}, fmt.Errorf("session %s: bad %s field %q in the store", id, f.name, v)
		}
		*f.dst = time.Unix(n, 0)
	}
	return ss, nil
}

// Refresh issues a new token for a live session, keeping its id: the
// session now expires at min(now+TTL, MaxExpiresAt). Older tokens of the
// session stay valid until their own expiry. It fails with ErrMaxAge once
// the session already expires at MaxExpiresAt (a refresh could not add
// any time: the user must sign in again), and with ErrNotFound if the
// session is gone (also when it is revoked during the refresh).
func (s *Store) Refresh(ctx context.Context, id string) (Session, string, error) {
	ss, err := s.Get(ctx, id)
	if err != nil {
		return Session{}, "", err
	}
	sid, _ := parseID(id)
	now := s.cfg.Now()
	iat := now.Truncate(time.Second)
	if !ss.ExpiresAt.Before(ss.MaxExpiresAt) {
		return Session{}, "", fmt.Errorf("session %s: %w at %s", id, ErrMaxAge, ss.MaxExpiresAt.UTC().Format(time.RFC3339))
	}
	exp := iat.Add(s.life.Load().ttl)
	if ss.MaxExpiresAt.Before(exp) {
		exp = ss.MaxExpiresAt
	}
	k := s.key.Load()
	if k == nil {
		return Session{}, "", errors.New("refresh session: the store has no signing key")
	}
	tok, err := k.Sign(token.Claims{SessionID: sid, TenantID: ss.Tenant, UserID: ss.User, IssuedAt: iat, ExpiresAt: exp})
	if err != nil {
		return Session{}, "", err
	}
	ok, err := refreshScript.Run(ctx, s.rdb,
		[]string{s.keys.session(id), s.keys.tenant(ss.Tenant)},
		ss.Tenant, exp.Unix(), iat.Unix(), k.ID(), exp.UnixMilli(), id).Int()
	if err != nil {
		return Session{}, "", fmt.Errorf("refresh session %s: %w", id, err)
	}
	if ok != 1 {
		return Session{}, "", ErrNotFound
	}
	if exp.After(ss.ExpiresAt) {
		ss.ExpiresAt = exp
	}
	ss.RefreshedAt, ss.KeyID = iat, k.ID()
	return ss, tok, nil
}

// Revoke deletes a session and publishes its id, so every Verifier refuses
// its tokens and ends its leases within about a second. It fails with
// ErrNotFound if the session did not exist.
func (s *Store) Revoke(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	tenant, err := s.rdb.HGet(ctx, s.keys.session(id), "tenant").Result()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("revoke session %s: %w", id, err)
	}
	n, err := s.revoke(ctx, tenant, []string{id})
	if err != nil {
		return fmt.Errorf("revoke session %s: %w", id, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// revoke runs revokeScript for ids of one tenant.
func (s *Store) revoke(ctx context.Context, tenant string, ids []string) (int, error) {
	ks := make([]string, 0, 1+len(ids))
	args := make([]any, 0, 1+len(ids))
	ks = append(ks, s.keys.tenant(tenant))
	args = append(args, s.cfg.Channel)
	for _, id := range ids {
		ks = append(ks, s.keys.session(id))
		args = append(args, id)
	}
	return revokeScript.Run(ctx, s.rdb, ks, args...).Int()
}

// revokeBatch bounds the ids one revokeScript call handles, so one call
// does not block Redis for long.
const revokeBatch = 500

// RevokeTenant revokes every session of tenant, publishing each, and
// returns how many there were. Sessions created while it runs are revoked
// too.
func (s *Store) RevokeTenant(ctx context.Context, tenant string) (int, error) {
	if !policy.ValidTenantID(tenant) {
		return 0, nil
	}
	total := 0
	for {
		ids, err := s.rdb.ZRange(ctx, s.keys.tenant(tenant), 0, revokeBatch-1).Result()
		if err != nil {
			return total, fmt.Errorf("revoke sessions of tenant %s: %w", tenant, err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return !validID(id) })
		if len(ids) == 0 { // only junk members: drop them and stop
			return total, s.rdb.Del(ctx, s.keys.tenant(tenant)).Err()
		}
		n, err := s.revoke(ctx, tenant, ids)
		total += n
		if err != nil {
			return total, fmt.Errorf("revoke sessions of tenant %s: %w", tenant, err)
		}
	}
}

// List returns the live sessions of tenant, oldest first.
func (s *Store) List(ctx context.Context, tenant string) ([]Session, error) {
	if !policy.ValidTenantID(tenant) {
		return nil, nil
	}
	zkey := s.keys.tenant(tenant)
	now := s.cfg.Now()
	pipe := s.rdb.Pipeline()
	pipe.ZRemRangeByScore(ctx, zkey, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	idsCmd := pipe.ZRange(ctx, zkey, 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("list sessions of tenant %s: %w", tenant, err)
	}
	ids := slices.DeleteFunc(idsCmd.Val(), func(id string) bool { return !validID(id) })
	if len(ids) == 0 {
		return nil, nil
	}
	pipe = s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.keys.session(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("list sessions of tenant %s: %w", tenant, err)
	}
	out := make([]Session, 0, len(ids))
	for i, id := range ids {
		ss, err := s.live(id, cmds[i].Val())
		if errors.Is(err, ErrNotFound) {
			continue // revoked since, or expired by a clock ahead of Redis'
		}
		if err != nil {
			return nil, err
		}
		if ss.Tenant == tenant {
			out = append(out, ss)
		}
	}
	slices.SortFunc(out, func(a, b Session) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}
