package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// leakCheck fails the test if it leaves goroutines behind. Call it first,
// so its cleanup runs after every other one.
func leakCheck(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore,
			goleak.IgnoreAnyFunction("github.com/tenantguard/tenantguard/internal/fixture/childproc.(*Process).wait"))
	})
}

// fakeClock is a settable Config.Now.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

var (
	keysOnce sync.Once
	key1     *token.SigningKey
	key2     *token.SigningKey
)

// signingKeys returns two keys shared by the package's tests.
func signingKeys(t testing.TB) (*token.SigningKey, *token.SigningKey) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if key1, err = token.GenerateKey("test-2026-01"); err != nil {
			panic(err)
		}
		if key2, err = token.GenerateKey("test-2026-02"); err != nil {
			panic(err)
		}
	})
	return key1, key2
}

// fixture is a Store and what Verifiers need, on its own key prefix and
// channel of a shared redis-server, with a fake clock.
type fixture struct {
	rdb   *redis.Client
	store *Store
	tv    *token.Verifier
	cfg   Config
	clock *fakeClock
}

// newFixture uses the package's shared redis-server; cfg's zero fields get
// the defaults, with a fresh prefix and channel and a fake clock.
func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	return newFixtureAt(t, harness.Redis(t).Addr(), cfg)
}

func newFixtureAt(t testing.TB, addr string, cfg Config) *fixture {
	t.Helper()
	rdb := newClient(t, addr)
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "t" + hex.EncodeToString(b[:]) + ":"
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = prefix
	}
	if cfg.Channel == "" {
		cfg.Channel = prefix + "revoked"
	}
	clock := newFakeClock(time.Now())
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	k1, _ := signingKeys(t)
	tv, err := token.NewVerifier(k1.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{rdb: rdb, store: NewStore(rdb, k1, cfg), tv: tv, cfg: cfg, clock: clock}
}

// newClient returns a client that fails fast, as the production one does.
func newClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr: addr, DisableIdentity: true, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// verifier starts a Verifier on the fixture and waits until it is
// subscribed; it is closed when the test ends.
func (f *fixture) verifier(t testing.TB) *Verifier {
	t.Helper()
	v, err := NewVerifier(f.rdb, f.tv, f.cfg, prometheus.NewRegistry(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("verifier close: %v", err)
		}
	})
	harness.Eventually(t, 5*time.Second, func() error {
		if !v.Healthy() {
			return errors.New("verifier not subscribed")
		}
		return nil
	})
	return v
}

// create creates a session and fails the test on error.
func (f *fixture) create(t testing.TB, tenant, user string) (Session, string) {
	t.Helper()
	s, tok, err := f.store.Create(context.Background(), tenant, user)
	if err != nil {
		t.Fatalf("create %s/%s: %v", tenant, user, err)
	}
	return s, tok
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// count reads a counter or gauge.
func count(c prometheus.Metric) int {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return int(m.Counter.GetValue())
	}
	return int(m.Gauge.GetValue())
}

// endRecorder collects the onEnd calls of one lease.
type endRecorder struct {
	mu    sync.Mutex
	errs  []error
	calls chan error
}

func newEndRecorder() *endRecorder { return &endRecorder{calls: make(chan error, 8)} }

func (r *endRecorder) onEnd(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.calls <- err
}

func (r *endRecorder) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs)
}

// wait waits for the next onEnd call and checks its error.
func (r *endRecorder) wait(t testing.TB, timeout time.Duration, want error) {
	t.Helper()
	select {
	case err := <-r.calls:
		if !errors.Is(err, want) {
			t.Fatalf("onEnd(%v), want %v", err, want)
		}
	case <-time.After(timeout):
		t.Fatalf("onEnd not called within %s", timeout)
	}
}

// wantErrs checks that err wraps every one of want (none: err is nil).
func wantErrs(t testing.TB, what string, err error, want ...error) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("%s: %v, want success", what, err)
		}
		return
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Fatalf("%s: %v, want an error wrapping %v", what, err, w)
		}
	}
}

// checkErr is a harness.Eventually condition: Check(tok) fails wrapping want.
func checkErr(v *Verifier, tok string, want error) func() error {
	return func() error {
		_, err := v.Check(context.Background(), tok)
		if !errors.Is(err, want) {
			return fmt.Errorf("Check: %v, want %v", err, want)
		}
		return nil
	}
}

// keyOf is tok's key in the verdict cache.
func keyOf(tok string) uint64 {
	sum := tokenSum(tok)
	return cacheKey(&sum)
}
