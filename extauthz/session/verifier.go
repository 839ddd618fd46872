package session

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/policy"
)

var _ policy.SessionVerifier = (*Verifier)(nil)

// closeFlushTimeout bounds the last analytics flush in Close.
const closeFlushTimeout = time.Second

// Verifier checks session tokens against the store: the checking side, for
// the ext_authz server (Check, Record) and the sidecars (Open, as a
// policy.SessionVerifier). It owns three goroutines — the revocation
// subscriber, the analytics flusher and the lease watcher — which Close
// stops. It is safe for concurrent use.
type Verifier struct {
	rdb   *redis.Client
	tv    *token.Verifier
	cfg   Config
	keys  keys
	log   *slog.Logger
	m     *metrics
	cache *ristretto.Cache[uint64, *Verdict] // keyed by cacheKey

	link      atomic.Pointer[link]
	ready     chan struct{} // closed once the first subscription attempt has ended
	readyOnce sync.Once

	mu     sync.RWMutex
	states map[token.SessionID]*sessionState

	watchMu sync.Mutex
	watch   watchHeap
	wake    chan struct{}

	dirtyMu sync.Mutex
	dirty   []*sessionState // sessions with unflushed analytics, each listed once

	flushMu      sync.Mutex
	pending      []*sessionState // sessions whose analytics the last flush did not write
	spare        []*sessionState
	scriptLoaded bool

	lookups sessionLookups // batches the store lookups of first-seen tokens

	psMu    sync.Mutex
	ps      *redis.PubSub
	closing bool

	closed    atomic.Bool
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Verdict is the store's answer for one verified token: its signatures
// were good and its session was live and matched the token's tenant and
// user. The Verifier caches it until the token expires and hands the same
// Verdict to every Verify of that token meanwhile, so a caller can keep
// what it derives from it (SetMemo) instead of deriving it again.
type Verdict struct {
	sum    [sha256.Size]byte // of the token: the cache's key is not collision-proof
	claims token.Claims      // as verified, KeyID included
	v      *Verifier         // nil for NewVerdict's
	st     *sessionState
	link   *link // the up period it was made in
	exp    time.Time
	memo   atomic.Value
}

// NewVerdict returns a verdict for claims that no Verifier made: its Record
// does nothing. It is for fakes of a Verifier in tests.
func NewVerdict(c token.Claims) *Verdict { return &Verdict{claims: c, exp: c.ExpiresAt} }

// Claims returns the token's verified claims, KeyID included.
func (vd *Verdict) Claims() token.Claims { return vd.claims }

// Record counts one request of the verdict's session for its analytics,
// as Verifier.Record does, without looking the session up: it takes no
// lock shared with other sessions and does not allocate.
func (vd *Verdict) Record(fingerprint uint64, refusedRule string) {
	if vd.v != nil {
		vd.v.record(vd.st, fingerprint, refusedRule)
	}
}

// Memo returns what SetMemo stored, or nil.
func (vd *Verdict) Memo() any { return vd.memo.Load() }

// SetMemo keeps m with the verdict, for as long as the verdict is cached:
// what a caller derives from the claims once (ext_authz keeps its encoded
// answer). Every SetMemo of one verdict must store the same type.
func (vd *Verdict) SetMemo(m any) { vd.memo.Store(m) }

// cacheKey is the verdict cache's key for a token's SHA-256: its first
// eight bytes. A hit is used only if the whole hash matches.
func cacheKey(sum *[sha256.Size]byte) uint64 { return binary.LittleEndian.Uint64(sum[:8]) }

// NewVerifier returns a Verifier that checks tokens with tv and sessions in
// rdb, registering its metrics with reg (nil: none) and logging to log
// (nil: slog.Default). It starts its goroutines and subscribes to the
// revocation channel in the background; until the first subscription
// attempt ends, lookups wait for it.
func NewVerifier(rdb *redis.Client, tv *token.Verifier, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Verifier, error) {
	if rdb == nil || tv == nil {
		return nil, errors.New("session: NewVerifier needs a Redis client and a token verifier")
	}
	cfg = cfg.withDefaults()
	if cfg.ClockSkew > 0 {
		tv.SetClockSkew(cfg.ClockSkew)
	}
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, *Verdict]{
		// Admission counters for 4× the capacity rather than ristretto's
		// suggested 10×: at the default capacity the 10× sketch and its
		// doorkeeper were 5.3 MB, half of the idle service's heap, and the
		// verdicts of tokens in use are admitted all the same.
		NumCounters:        4 * cfg.CacheEntries,
		MaxCost:            cfg.CacheEntries,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("session: verdict cache: %w", err)
	}
	v := &Verifier{
		rdb: rdb, tv: tv, cfg: cfg, keys: keys{cfg.KeyPrefix}, log: log, m: m, cache: cache,
		ready:  make(chan struct{}),
		states: make(map[token.SessionID]*sessionState),
		wake:   make(chan struct{}, 1),
	}
	v.link.Store(&link{state: linkConnecting, since: cfg.Now()})
	m.storeUp.Set(0)
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	v.wg.Add(3)
	go v.subscribeLoop(ctx)
	go v.watchLoop(ctx)
	go v.flushLoop(ctx)
	return v, nil
}

// Close stops the verifier's goroutines, writes the analytics not yet
// flushed (if the store is reachable, for at most a second) and releases
// the cache. Open leases stay open but are never ended after Close. Close
// does not close the Redis client.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		v.closed.Store(true)
		v.cancel()
		v.psMu.Lock()
		v.closing = true
		if v.ps != nil {
			_ = v.ps.Close()
		}
		v.psMu.Unlock()
		v.wg.Wait()
		if v.link.Load().state == linkUp {
			ctx, cancel := context.WithTimeout(context.Background(), closeFlushTimeout)
			if err := v.flush(ctx); err != nil {
				v.closeErr = fmt.Errorf("session: last analytics flush: %w", err)
			}
			cancel()
		}
		v.cache.Close()
		v.m.storeUp.Set(0)
	})
	return v.closeErr
}

// Healthy reports whether the store is reachable: the revocation
// subscription is up.
func (v *Verifier) Healthy() bool { return v.link.Load().state == linkUp }

// IsToken reports whether secret has the form of a session token ("tg1."
// prefix); it does not verify anything.
func (v *Verifier) IsToken(secret string) bool { return strings.HasPrefix(secret, token.Prefix) }

// Verify verifies tok for the ext_authz path (any tenant): signatures, key
// id and times, then that its session is live in the store, and returns
// the verdict. A token seen before is answered from the verdict cache: its
// SHA-256 is computed and compared, neither signature is checked again and
// nothing is asked of the store. Errors wrap one of
// policy.ErrSessionInvalid, ErrSessionExpired, ErrSessionRevoked and
// ErrSessionUnavailable and, when the token itself is at fault, the
// token.Err* that says why. Verify does not keep tok past its return.
func (v *Verifier) Verify(ctx context.Context, tok string) (*Verdict, error) {
	vd, result, err := v.verify(ctx, tok)
	v.m.byResult[result].Inc()
	return vd, err
}

// Check is Verify returning only the claims.
func (v *Verifier) Check(ctx context.Context, tok string) (token.Claims, error) {
	vd, err := v.Verify(ctx, tok)
	if err != nil {
		return token.Claims{}, err
	}
	return vd.claims, nil
}

func (v *Verifier) verify(ctx context.Context, tok string) (*Verdict, string, error) {
	now := v.cfg.Now()
	if v.closed.Load() {
		return nil, resultUnavailable, errClosed
	}
	// A cached verdict stands for both signatures: the token's SHA-256
	// matched and its key is still held, so neither is checked again.
	sum := tokenSum(tok)
	cur := v.link.Load()
	vd, result, err := v.cached(&sum, now, cur)
	if err != nil || vd != nil {
		return vd, result, err
	}
	c, result, err := v.claims(tok, now)
	if err != nil {
		return nil, result, err
	}
	st := v.acquire(c.SessionID, c.TenantID)
	defer v.release(st)
	return v.confirm(ctx, c, st, &sum, now, cur)
}

// Open verifies tok as a credential for tenant — Check, plus the token must
// have been issued for that very tenant — and returns a lease that watches
// the session: onEnd(policy.ErrSessionEnded) when it is revoked or the
// token expires, onEnd(policy.ErrSessionStoreLost) when the store stays
// unreachable past the grace period (at once with Grace 0). onEnd is called
// at most once, from a goroutine of the Verifier, and never after the
// lease's Close has returned.
func (v *Verifier) Open(ctx context.Context, tenant, tok string, onEnd func(error)) (policy.SessionLease, error) {
	l, result, err := v.open(ctx, tenant, tok, onEnd)
	v.m.byResult[result].Inc()
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (v *Verifier) open(ctx context.Context, tenant, tok string, onEnd func(error)) (*lease, string, error) {
	now := v.cfg.Now()
	if v.closed.Load() {
		return nil, resultUnavailable, errClosed
	}
	sum := tokenSum(tok)
	cur := v.link.Load()
	vd, result, err := v.cached(&sum, now, cur)
	if err != nil {
		return nil, result, err
	}
	var c token.Claims
	if vd != nil {
		c = vd.claims
	} else if c, result, err = v.claims(tok, now); err != nil {
		return nil, result, err
	}
	if c.TenantID != tenant {
		return nil, resultInvalid, fmt.Errorf("%w: the token was issued for another tenant", policy.ErrSessionInvalid)
	}
	st := v.acquire(c.SessionID, c.TenantID)
	defer v.release(st)
	if vd == nil || vd.st != st {
		if _, result, err = v.confirm(ctx, c, st, &sum, now, cur); err != nil {
			return nil, result, err
		}
	}
	if onEnd == nil {
		onEnd = func(error) {}
	}
	l := &lease{v: v, st: st, user: c.UserID, exp: c.ExpiresAt, onEnd: onEnd}
	if !v.addLease(l) {
		return nil, resultRevoked, fmt.Errorf("%w: session %s", policy.ErrSessionRevoked, st.idHex)
	}
	return l, result, nil
}

// skew is the clock skew a cached verdict allows before a token's issue
// time: the configured one, else the token package's default.
func (v *Verifier) skew() time.Duration {
	if v.cfg.ClockSkew > 0 {
		return v.cfg.ClockSkew
	}
	return token.DefaultClockSkew
}

var errClosed = fmt.Errorf("%w: the verifier is closed", policy.ErrSessionUnavailable)

// claims verifies the token itself.
func (v *Verifier) claims(tok string, now time.Time) (token.Claims, string, error) {
	c, err := v.tv.Verify(tok, now)
	switch {
	case err == nil:
		return c, "", nil
	case errors.Is(err, token.ErrExpired), errors.Is(err, token.ErrNotYetValid):
		return c, resultExpired, fmt.Errorf("%w: %w", policy.ErrSessionExpired, err)
	default:
		return c, resultInvalid, fmt.Errorf("%w: %w", policy.ErrSessionInvalid, err)
	}
}

// tokenSum hashes tok without copying it (sha256 only reads its input).
func tokenSum(tok string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))
}

// cached looks for a usable cached verdict. It returns the verdict and
// resultCached on a usable hit, an error if the verdict says no (session
// revoked, or the store unreachable past the grace period), and neither on
// a miss (including a verdict from an earlier link period).
func (v *Verifier) cached(sum *[sha256.Size]byte, now time.Time, cur *link) (*Verdict, string, error) {
	vd, ok := v.cache.Get(cacheKey(sum))
	if !ok || vd.sum != *sum || !v.tv.HasKey(vd.claims.KeyID) || now.Before(vd.claims.IssuedAt.Add(-v.skew())) {
		// A miss, a colliding key, a retired signing key, or a clock that
		// went back before the issue time: verify afresh, which gives the
		// right refusal.
		return nil, "", nil
	}
	switch {
	case vd.st.revoked.Load():
		return nil, resultRevoked, fmt.Errorf("%w: session %s", policy.ErrSessionRevoked, vd.st.idHex)
	case !now.Before(vd.exp): // Verify has refused this already; kept for safety
		return nil, resultExpired, fmt.Errorf("%w: %w", policy.ErrSessionExpired, token.ErrExpired)
	case vd.link == cur:
	case cur.state == linkDown && cur.prevUp == vd.link && v.cfg.Grace > 0 && now.Before(cur.since.Add(v.cfg.Grace)):
		// Made before this outage and still within its grace period.
	case cur.state == linkDown:
		return nil, resultUnavailable, fmt.Errorf("%w: since %s", policy.ErrSessionUnavailable, cur.since.UTC().Format(time.RFC3339))
	default:
		return nil, "", nil
	}
	v.m.cacheHits.Inc()
	return vd, resultCached, nil
}

// confirm asks the store whether st's session is live and matches the
// claims, and caches a good answer until the token expires.
func (v *Verifier) confirm(ctx context.Context, c token.Claims, st *sessionState, sum *[sha256.Size]byte, now time.Time, cur *link) (*Verdict, string, error) {
	if cur.state == linkConnecting {
		select {
		case <-v.ready:
		case <-ctx.Done():
			return nil, resultUnavailable, fmt.Errorf("%w: %w", policy.ErrSessionUnavailable, ctx.Err())
		}
		cur = v.link.Load()
	}
	if cur.state != linkUp {
		return nil, resultUnavailable, fmt.Errorf("%w: since %s", policy.ErrSessionUnavailable, cur.since.UTC().Format(time.RFC3339))
	}
	if st.revoked.Load() {
		return nil, resultRevoked, fmt.Errorf("%w: session %s", policy.ErrSessionRevoked, st.idHex)
	}
	tenant, user, found, err := v.lookupSession(ctx, v.keys.session(st.idHex))
	if err != nil {
		return nil, resultUnavailable, fmt.Errorf("%w: %w", policy.ErrSessionUnavailable, err)
	}
	switch {
	case !found:
		return nil, resultRevoked, fmt.Errorf("%w: session %s is not in the store", policy.ErrSessionRevoked, st.idHex)
	case tenant != c.TenantID || user != c.UserID:
		v.log.Warn("token claims do not match its session in the store", "session", st.idHex, "tenant", c.TenantID)
		return nil, resultInvalid, fmt.Errorf("%w: session %s belongs to another tenant or user", policy.ErrSessionInvalid, st.idHex)
	case st.revoked.Load(): // the revocation arrived while we asked
		return nil, resultRevoked, fmt.Errorf("%w: session %s", policy.ErrSessionRevoked, st.idHex)
	}
	vd := &Verdict{sum: *sum, claims: c, v: v, st: st, link: cur, exp: c.ExpiresAt}
	if ttl := c.ExpiresAt.Sub(now); ttl > 0 {
		st.noteCached(c.ExpiresAt)
		v.cache.SetWithTTL(cacheKey(sum), vd, 1, ttl)
	}
	return vd, resultOK, nil
}

// Record counts one HTTP request of session id (from Check) for its
// analytics: fingerprint identifies the request's shape (0 if none),
// refusedRule names the rule that refused it ("" if allowed). It does no
// I/O and never waits for any.
func (v *Verifier) Record(id token.SessionID, fingerprint uint64, refusedRule string) {
	v.mu.RLock()
	st := v.states[id]
	v.mu.RUnlock()
	if st == nil {
		if v.closed.Load() || id.IsZero() {
			return
		}
		st = v.acquire(id, "")
		v.release(st)
	}
	v.record(st, fingerprint, refusedRule)
}
