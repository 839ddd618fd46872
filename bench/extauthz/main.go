// Command extauthz measures tenantguard's Envoy ext_authz service: Check
// throughput and p50/p99 latency at 1 and 64 concurrent gRPC streams, with
// verdicts cached (the same token again) and uncached (every request a
// token the service has not seen), and the cost of the hybrid signature
// next to Ed25519 alone.
//
// It starts a throwaway redis-server (the session store) and
// `tenantguard extauthz` as a child process, creates sessions in the store
// with the signing key it gave the service, and drives Check from this
// process with a client built from go-control-plane's types. See
// bench/README.md.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/redisserver"
)

type options struct {
	benchkit.Options
	duration time.Duration // per cached run
	uncached int           // requests per uncached run
	streams  []int
}

func main() { benchkit.Main("extauthzbench", parseFlags, run) }

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("extauthzbench", flag.ContinueOnError)
	o.Register(fs, "checks/s")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each cached run")
	fs.IntVar(&o.uncached, "uncached", 6000, "requests in each uncached run (each needs a session signed beforehand)")
	if err := o.Parse(fs, args); err != nil {
		return o, err
	}
	o.streams = []int{1, 64}
	return o, nil
}

var b64 = base64.RawURLEncoding

const prefix = "tg:session:" // the service's default key prefix

func run(ctx context.Context, o options) error {
	if err := benchkit.EnsureBinary(ctx, o.Tenantguard); err != nil {
		return err
	}
	rs, err := redisserver.Start(ctx, redisserver.Options{})
	if err != nil {
		return err
	}
	defer rs.Close()

	svc, err := benchkit.NewService("tenantguard extauthz", "tg-bench-extauthz-")
	if err != nil {
		return err
	}
	key, err := token.GenerateKey("bench-1")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(svc.Dir, "signing.pem"), key.MarshalPEM(), 0o600); err != nil {
		return err
	}
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return err
	}
	grpcAddr, httpAddr := benchkit.LocalAddr(ports[0]), benchkit.LocalAddr(ports[1])
	svc.Addr = grpcAddr
	cfg := fmt.Sprintf("listen:\n  grpc: %q\n  http: %q\nadmin_token: bench-admin-token-0123456789\n"+
		"sessions:\n  store: \"redis://%s/0\"\n  signing_key: signing.pem\n  ttl: 1h\n  max_age: 2h\n"+
		"tenants: [acme, globex]\n", grpcAddr, httpAddr, rs.Addr())
	if err := os.WriteFile(filepath.Join(svc.Dir, "extauthz.yaml"), []byte(cfg), 0o600); err != nil {
		return svc.Discard(err)
	}
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return svc.Discard(err)
	}
	defer cc.Close()
	ready := func(ctx context.Context) error {
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %v", r.GetStatus())
		}
		return nil
	}
	abs, _ := filepath.Abs(o.Tenantguard)
	if err := svc.Start(ctx, ready, abs, "extauthz", "--config", "extauthz.yaml", "--log-level", "warn"); err != nil {
		return err
	}
	defer svc.Stop()

	rdb := goredis.NewClient(&goredis.Options{Addr: rs.Addr(), DisableIdentity: true})
	defer rdb.Close()
	store := session.NewStore(rdb, key, session.Config{TTL: time.Hour, MaxAge: 2 * time.Hour, KeyPrefix: prefix})
	client := authv3.NewAuthorizationClient(cc)

	rep := benchkit.Report{Setup: fmt.Sprintf("ext_authz Check over gRPC (one HTTP/2 connection), tenantguard extauthz as a child process, session store on a local redis-server; cached runs %s, uncached runs %d requests; median of %d round(s).", o.duration, o.uncached, o.Rounds)}
	table := benchkit.Table{Left: 2, Header: []string{"verdict", "streams", "checks/s", "p50 µs", "p99 µs", "server CPU ms/1k"}}
	for _, cached := range []bool{true, false} {
		for _, streams := range o.streams {
			var tps, p50, p99, cpu []float64
			for range o.Rounds {
				var toks []string
				n := o.uncached
				if cached {
					n = streams
				}
				benchkit.Logf("signing %d session tokens", n)
				if toks, err = createTokens(ctx, store, n); err != nil {
					return err
				}
				var r result
				ticks, err := benchkit.CPUDuring(svc, func() error {
					var err error
					r, err = load(ctx, client, toks, streams, cached, o.duration)
					return err
				})
				if err != nil {
					return err
				}
				tps = append(tps, r.rate())
				p50 = append(p50, r.pct(0.50))
				p99 = append(p99, r.pct(0.99))
				cpu = append(cpu, benchkit.MsPer1k(ticks, int64(len(r.lat)), float64(benchkit.ClockTicks())))
				benchkit.Logf("%s, %d streams: %.0f checks/s, p50 %.0f µs, p99 %.0f µs", label(cached), streams, r.rate(), r.pct(0.5), r.pct(0.99))
			}
			table.Rows = append(table.Rows, []string{label(cached), fmt.Sprint(streams),
				benchkit.Num(benchkit.Median(tps), "%.0f"), benchkit.Num(benchkit.Median(p50), "%.0f"),
				benchkit.Num(benchkit.Median(p99), "%.0f"), benchkit.Num(benchkit.Median(cpu), "%.1f")})
		}
	}
	rep.Tables = append(rep.Tables, table, signatureCost(key))
	rss, _ := svc.RSSKiB()
	rep.Notes = append(rep.Notes, fmt.Sprintf("ext_authz RSS after the runs: %.1f MiB.", float64(rss)/1024),
		"cached: each stream repeats its own token, so after the first Check the verdict comes from the cache (SHA-256 of the token, no signature check, no Redis round trip).",
		"uncached: every request carries a token the service has never seen: both signatures are verified and the session is looked up in Redis.")
	return rep.Write(o.Out)
}

func label(cached bool) string {
	if cached {
		return "cached"
	}
	return "uncached"
}

func createTokens(ctx context.Context, store *session.Store, n int) ([]string, error) {
	toks := make([]string, n)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	per := (n + 1) / 2
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * per; i < min(n, (w+1)*per); i++ {
				_, tok, err := store.Create(ctx, "acme", fmt.Sprintf("user-%d", i))
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				toks[i] = tok
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return nil, *p
	}
	return toks, nil
}

type result struct {
	lat     []time.Duration
	elapsed time.Duration
}

func (r result) rate() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r result) pct(p float64) float64 {
	if len(r.lat) == 0 {
		return 0
	}
	return float64(r.lat[int(p*float64(len(r.lat)-1))].Microseconds())
}

// load runs streams workers; cached workers repeat their own token for d,
// uncached ones take the next unused token until none is left.
func load(ctx context.Context, c authv3.AuthorizationClient, toks []string, streams int, cached bool, d time.Duration) (result, error) {
	var next atomic.Int64
	lats := make([][]time.Duration, streams)
	errs := make(chan error, streams)
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var tok string
				if cached {
					if time.Now().After(deadline) {
						return
					}
					tok = toks[w]
				} else {
					i := next.Add(1) - 1
					if int(i) >= len(toks) {
						return
					}
					tok = toks[i]
				}
				t0 := time.Now()
				resp, err := c.Check(ctx, request(tok))
				if err != nil {
					errs <- err
					return
				}
				if resp.GetStatus().GetCode() != int32(codes.OK) {
					errs <- fmt.Errorf("denied: %s", resp.GetDeniedResponse().GetBody())
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	r := result{elapsed: time.Since(start)}
	select {
	case err := <-errs:
		return r, err
	default:
	}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
	}
	slices.Sort(r.lat)
	return r, nil
}

func request(tok string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/orders", Host: "app.example.com",
			Headers: map[string]string{":method": "GET", ":path": "/orders", ":authority": "app.example.com", "authorization": "Bearer " + tok}},
	}}}
}

// signatureCost times token verification (both signatures) against
// Ed25519 verification alone, on this machine, single-threaded.
func signatureCost(key *token.SigningKey) benchkit.Table {
	now := time.Now()
	c, _ := token.NewClaims("acme", "alice", now, time.Hour)
	tok, _ := key.Sign(c)
	v, _ := token.NewVerifier(key.Public())
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg := []byte("tenantguard-token-v1 a 53-byte payload, as for a typical token")
	sig := ed25519.Sign(priv, msg)
	timeIt := func(f func()) float64 {
		const n = 2000
		f()
		t0 := time.Now()
		for range n {
			f()
		}
		return float64(time.Since(t0).Microseconds()) / n
	}
	hybrid := timeIt(func() { _, _ = v.Verify(tok, now) })
	ed := timeIt(func() { ed25519.Verify(pub, msg, sig) })
	hybridSign := timeIt(func() { _, _ = key.Sign(c) })
	edSign := timeIt(func() { ed25519.Sign(priv, msg) })
	return benchkit.Table{Left: 1, Header: []string{"operation", "hybrid µs", "Ed25519 alone µs", "hybrid ÷ Ed25519"},
		Rows: [][]string{
			{"verify", benchkit.Num(hybrid, "%.1f"), benchkit.Num(ed, "%.1f"), benchkit.Ratio(hybrid, ed)},
			{"sign", benchkit.Num(hybridSign, "%.1f"), benchkit.Num(edSign, "%.1f"), benchkit.Ratio(hybridSign, edSign)},
			// An Ed25519-only token would carry the same payload and a 64-byte signature.
			{"token bytes", fmt.Sprint(len(tok)), fmt.Sprint(len("tg1.") + b64.EncodedLen(37+len("acme")+len("alice")+len(key.ID())) + 1 + b64.EncodedLen(ed25519.SignatureSize)), ""},
		}}
}
