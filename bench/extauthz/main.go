// Command extauthz measures tenantguard's Envoy ext_authz service as Envoy
// drives it: Check throughput, p50/p99/p99.9 latency and the service's CPU,
// system calls and context switches per Check at 1, 16 and 64 concurrent
// streams over two long-lived HTTP/2 connections, with verdicts cached
// (each stream repeats its token) and uncached (every request a token the
// service has not seen), the service's RSS, and the cost of the hybrid
// signature next to Ed25519 alone.
//
// It starts a throwaway redis-server (the session store) and
// `tenantguard extauthz` as a child process, creates sessions in the store
// with the signing key it gave the service, and drives Check from this
// process with its own HTTP/2 client (h2load.go) sending the CheckRequest
// Envoy sends for a browser's request (request.go). See bench/README.md.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
)

type options struct {
	benchkit.Options
	duration time.Duration // per cached run
	uncached int           // requests in each uncached run
	streams  []int
	conns    int
	checks   int           // cached runs of this many checks instead of duration
	timeout  time.Duration // grpc-timeout of every Check
	// callgrind runs the service under valgrind's callgrind and reports the
	// instructions it executed per check: a measure that does not depend on
	// how busy the machine is.
	callgrind    bool
	callgrindDir string // keep callgrind's dump of each run here
}

func main() { benchkit.Main("extauthzbench", parseFlags, run) }

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("extauthzbench", flag.ContinueOnError)
	o.Register(fs, "checks/s")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each cached run")
	fs.IntVar(&o.uncached, "uncached", 16000, "requests in each uncached run (each needs a session signed beforehand)")
	streams := fs.String("streams", "1,16,64", "concurrent streams of the runs, comma-separated")
	fs.IntVar(&o.conns, "conns", 2, "HTTP/2 connections the streams are spread over (Envoy: one per worker thread)")
	fs.IntVar(&o.checks, "checks", 0, "if set, cached runs make this many checks instead of running for -duration")
	fs.DurationVar(&o.timeout, "timeout", 200*time.Millisecond, "grpc-timeout of each Check (Envoy's ext_authz filter default: 200ms)")
	fs.BoolVar(&o.callgrind, "callgrind", false, "run the service under valgrind --tool=callgrind and report its instructions per check "+
		"(slow: use with -checks 2000 -uncached 1000 -timeout 30s)")
	fs.StringVar(&o.callgrindDir, "callgrind-dir", "", "with -callgrind, keep each run's dump in this directory as callgrind.out.<verdict>-<streams> (for callgrind_annotate)")
	if err := o.Parse(fs, args); err != nil {
		return o, err
	}
	for _, f := range strings.Split(*streams, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-streams: %q is not a positive number", f)
		}
		o.streams = append(o.streams, n)
	}
	if o.conns < 1 || o.uncached < 1 || o.duration <= 0 || o.timeout < time.Millisecond || o.checks < 0 {
		return o, fmt.Errorf("-conns, -uncached, -duration and -timeout must be positive")
	}
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
		return svc.Discard(err)
	}
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return svc.Discard(err)
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
	bin, args := abs, []string{"extauthz", "--config", "extauthz.yaml", "--log-level", "warn"}
	if o.callgrind {
		// Callgrind cannot follow Go's preemption signals.
		bin, args = "env", append([]string{"GODEBUG=asyncpreemptoff=1", "valgrind", "--tool=callgrind", "--callgrind-out-file=callgrind.out", abs}, args...)
	}
	if err := svc.Start(ctx, ready, bin, args...); err != nil {
		return err
	}
	defer svc.Stop()
	_ = cc.Close() // the health client's connection is not part of the load

	rdb := goredis.NewClient(&goredis.Options{Addr: rs.Addr(), DisableIdentity: true})
	defer rdb.Close()
	store := session.NewStore(rdb, key, session.Config{TTL: time.Hour, MaxAge: 2 * time.Hour, KeyPrefix: prefix})

	conns := make([]*h2conn, o.conns)
	for i := range conns {
		if conns[i], err = dialH2(grpcAddr, grpcTimeout(o.timeout)); err != nil {
			return fmt.Errorf("connect to ext_authz: %w", err)
		}
		defer conns[i].Close()
	}
	b := &bench{o: o, store: store, conns: conns, pid: svc.Pid(), svc: svc, metrics: "http://" + httpAddr + "/metrics"}
	if out, err := exec.CommandContext(ctx, abs, "version").Output(); err == nil {
		b.version = strings.TrimSpace(string(out))
	}

	rep := benchkit.Report{Setup: fmt.Sprintf("ext_authz Check as Envoy calls it: %d long-lived HTTP/2 connections, the streams spread over them, "+
		"each stream a closed loop; a %d-byte CheckRequest as Envoy sends for a browser's GET (headers, addresses, context_extensions, a %d-byte bearer token) "+
		"with grpc-timeout %s. tenantguard extauthz runs as a child process (its CPU, system calls and RSS from /proc are its own), "+
		"the session store on a local redis-server; cached runs %s after a warm-up, uncached runs %d requests; median of %d round(s).",
		o.conns, b.requestSize(), b.tokenSize(), grpcTimeout(o.timeout), o.duration, o.uncached, o.Rounds)}
	header := []string{"verdict", "streams", "checks/s", "p50 µs", "p99 µs", "p99.9 µs",
		"server CPU µs/check", "server allocs/check", "server KB alloc/check", "server syscalls/check", "server ctx switches/check", "load gen CPU µs/check", "timeouts"}
	if o.callgrind {
		header = append(header, "server instructions/check")
	}
	table := benchkit.Table{Left: 2, Header: header}
	results := map[string]caseResult{}
	// Idle: started and ready, its session store reachable, no Check yet.
	idle, err := memory(svc.Pid(), b.metrics)
	if err != nil {
		return err
	}
	mem := map[bool]memSample{}
	for _, cached := range []bool{true, false} {
		for _, streams := range o.streams {
			var rounds []caseResult
			for range o.Rounds {
				r, err := b.runCase(ctx, cached, streams)
				if err != nil {
					return fmt.Errorf("%s, %d streams: %w", label(cached), streams, err)
				}
				if err := svc.Alive(); err != nil {
					return err
				}
				benchkit.Logf("%s, %d streams: %.0f checks/s, p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs; server per check: %.1f µs CPU, %.1f allocs (%.0f B), %.2f syscalls, %.2f context switches; load gen %.1f µs CPU per check; %.0f timeouts",
					label(cached), streams, r.rate, r.p50, r.p99, r.p999, r.cpu, r.allocs, r.allocB, r.syscalls, r.ctxsw, r.client, r.timeouts)
				rounds = append(rounds, r)
			}
			m := medianResult(rounds)
			results[fmt.Sprint(label(cached), streams)] = m
			row := []string{label(cached), fmt.Sprint(streams),
				benchkit.Num(m.rate, "%.0f"), benchkit.Num(m.p50, "%.0f"), benchkit.Num(m.p99, "%.0f"), benchkit.Num(m.p999, "%.0f"),
				benchkit.Num(m.cpu, "%.1f"), benchkit.Num(m.allocs, "%.1f"), benchkit.Num(m.allocB/1024, "%.2f"), benchkit.Num(m.syscalls, "%.2f"), benchkit.Num(m.ctxsw, "%.2f"), benchkit.Num(m.client, "%.1f"), fmt.Sprint(m.timeouts)}
			if o.callgrind {
				row = append(row, benchkit.Num(m.instr, "%.0f"))
			}
			table.Rows = append(table.Rows, row)
		}
		if mem[cached], err = memory(svc.Pid(), b.metrics); err != nil {
			return err
		}
	}
	rep.Tables = append(rep.Tables, table, signatureCost(key))
	rep.Notes = append(rep.Notes,
		fmt.Sprintf("ext_authz memory (%s) idle, ready and before any Check: %s; after the cached runs: %s; after the uncached runs (%d sessions, each still cached): %s.",
			b.version, idle, mem[true], len(o.streams)*o.uncached*o.Rounds, mem[false]),
		targets(results, mem[true].rss),
		"cached: each stream repeats its own token (its own session), so after the warm-up every verdict comes from the cache: no signature check, no Redis round trip.",
		"uncached: every request carries a token the service has never seen: both signatures are verified and the session is looked up in Redis.",
		"server CPU is user+system time of the service from /proc/PID/stat (10 ms ticks); syscalls are its read- and write-family calls (/proc/PID/io syscr+syscw: "+
			"reads and writes of sockets; futex and epoll calls are not counted); context switches are summed over its threads. "+
			"load gen CPU is this process's: compare it with the service's to see how the two cores were shared.")
	return rep.Write(o.Out)
}

// targets says whether the run met issue #11's goals.
// rss is the service's VmRSS in KiB after the cached runs (0: not measured).
func targets(r map[string]caseResult, rss int64) string {
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	var parts []string
	if c, ok := r["cached16"]; ok {
		parts = append(parts, fmt.Sprintf("cached at 16 streams ≥ 30000 checks/s with p99 < 2000 µs: %s (%.0f checks/s, p99 %.0f µs)",
			met(c.rate >= 30000 && c.p99 < 2000), c.rate, c.p99))
	}
	best, at := 0.0, 0
	for k, c := range r {
		if n, ok := strings.CutPrefix(k, "uncached"); ok && c.rate > best {
			best, at = c.rate, atoi(n)
		}
	}
	if at > 0 {
		parts = append(parts, fmt.Sprintf("uncached ≥ 8000 checks/s: %s (%.0f checks/s at %d streams)", met(best >= 8000), best, at))
	}
	if rss > 0 {
		parts = append(parts, fmt.Sprintf("RSS after the cached runs ≤ 40 MiB: %s (%.1f MiB)", met(rss <= 40*1024), float64(rss)/1024))
	}
	return "Targets: " + strings.Join(parts, "; ") + "."
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func label(cached bool) string {
	if cached {
		return "cached"
	}
	return "uncached"
}

// bench is one benchmark's service, store and connections.
type bench struct {
	o       options
	store   *session.Store
	conns   []*h2conn
	pid     int
	svc     *benchkit.Service
	metrics string // the service's /metrics URL
	version string // `tenantguard version` of the binary: which build
	reqNo   atomic.Uint64
	// a sample request, for the report
	sample encodedRequest
	tok    string
}

func (b *bench) requestSize() int { b.ensureSample(); return len(b.sample.msg) - 5 }
func (b *bench) tokenSize() int   { b.ensureSample(); return len(b.tok) }

func (b *bench) ensureSample() {
	if b.sample.msg != nil {
		return
	}
	c, _ := token.NewClaims("acme", "user-0", time.Now(), time.Hour)
	k, _ := token.GenerateKey("bench-1")
	b.tok, _ = k.Sign(c)
	b.sample, _ = encodeRequest(checkRequest(b.tok, 0))
}

// caseResult is one run's figures; per-Check costs are the service's.
type caseResult struct {
	rate, p50, p99, p999 float64
	cpu, syscalls, ctxsw float64
	client               float64
	timeouts             float64 // Checks that hit the 200 ms deadline
	instr                float64 // instructions per check, under -callgrind
	allocs, allocB       float64 // the service's heap allocations and bytes per check
}

func medianResult(rs []caseResult) caseResult {
	med := func(f func(caseResult) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return benchkit.Median(xs)
	}
	return caseResult{
		rate: med(func(r caseResult) float64 { return r.rate }), p50: med(func(r caseResult) float64 { return r.p50 }),
		p99: med(func(r caseResult) float64 { return r.p99 }), p999: med(func(r caseResult) float64 { return r.p999 }),
		cpu: med(func(r caseResult) float64 { return r.cpu }), syscalls: med(func(r caseResult) float64 { return r.syscalls }),
		ctxsw: med(func(r caseResult) float64 { return r.ctxsw }), client: med(func(r caseResult) float64 { return r.client }),
		timeouts: med(func(r caseResult) float64 { return r.timeouts }),
		instr:    med(func(r caseResult) float64 { return r.instr }),
		allocs:   med(func(r caseResult) float64 { return r.allocs }),
		allocB:   med(func(r caseResult) float64 { return r.allocB }),
	}
}

// runCase signs the run's tokens, encodes its requests, and measures it.
func (b *bench) runCase(ctx context.Context, cached bool, streams int) (caseResult, error) {
	n := b.o.uncached
	if cached {
		n = streams
	}
	benchkit.Logf("signing %d session tokens", n)
	toks, err := createTokens(ctx, b.store, n)
	if err != nil {
		return caseResult{}, err
	}
	reqs := make([]encodedRequest, n)
	for i, tok := range toks {
		if reqs[i], err = encodeRequest(checkRequest(tok, i)); err != nil {
			return caseResult{}, err
		}
	}
	if cached {
		// Warm up: every token's first Check fills the cache; then the
		// service runs a while at this concurrency before we measure.
		warm := min(b.o.duration/5, time.Second)
		if _, _, err := b.drive(streams, func(g int) func() (encodedRequest, bool) {
			until := time.Now().Add(warm)
			return func() (encodedRequest, bool) { return reqs[g], time.Now().Before(until) }
		}); err != nil {
			return caseResult{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	if err := b.callgrind("-z"); err != nil {
		return caseResult{}, err
	}
	before, err := sampleProc(b.pid, b.metrics)
	if err != nil {
		return caseResult{}, err
	}
	start := time.Now()
	var next atomic.Int64
	lat, timeouts, err := b.drive(streams, func(g int) func() (encodedRequest, bool) {
		if cached && b.o.checks > 0 {
			left := b.o.checks / streams
			return func() (encodedRequest, bool) { left--; return reqs[g], left >= 0 }
		}
		if cached {
			until := start.Add(b.o.duration)
			return func() (encodedRequest, bool) { return reqs[g], time.Now().Before(until) }
		}
		return func() (encodedRequest, bool) {
			i := next.Add(1) - 1
			if int(i) >= len(reqs) {
				return encodedRequest{}, false
			}
			return reqs[i], true
		}
	})
	elapsed := time.Since(start)
	if err != nil {
		return caseResult{}, err
	}
	after, err := sampleProc(b.pid, b.metrics)
	if err != nil {
		return caseResult{}, err
	}
	instr, err := b.instructions(fmt.Sprintf("%s-%d", label(cached), streams))
	if err != nil {
		return caseResult{}, err
	}
	slices.Sort(lat)
	checks := float64(len(lat))
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	return caseResult{
		rate: checks / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99), p999: pct(0.999),
		cpu:      float64(after.cpuTicks-before.cpuTicks) / float64(benchkit.ClockTicks()) * 1e6 / checks,
		syscalls: float64(after.syscalls-before.syscalls) / checks,
		ctxsw:    float64(after.ctxsw-before.ctxsw) / checks,
		client:   float64(after.selfCPU-before.selfCPU) / checks,
		timeouts: float64(timeouts),
		instr:    float64(instr) / checks,
		allocs:   float64(after.mallocs-before.mallocs) / checks,
		allocB:   float64(after.allocB-before.allocB) / checks,
	}, nil
}

// drive runs streams closed-loop callers spread over the connections, each
// sending what its plan (made by plan for its global stream number) gives,
// and returns every Check's latency.
func (b *bench) drive(streams int, plan func(g int) func() (encodedRequest, bool)) ([]time.Duration, int, error) {
	type out struct {
		lat      []time.Duration
		timeouts int
		err      error
	}
	results := make(chan out, len(b.conns))
	used := 0
	for ci, c := range b.conns {
		n := streams / len(b.conns)
		if ci < streams%len(b.conns) {
			n++
		}
		if n == 0 {
			continue
		}
		used++
		plans := make([]func() (encodedRequest, bool), n)
		for i := range plans {
			plans[i] = plan(i*len(b.conns) + ci)
		}
		go func() {
			p := &runPlan{
				next: func(i int) (encodedRequest, bool) { return plans[i]() },
				lat:  make([]time.Duration, 0, 1<<16),
				reqs: &b.reqNo,
			}
			lat, err := c.run(n, p)
			results <- out{lat, p.timeouts, err}
		}()
	}
	var all []time.Duration
	var errs []error
	timeouts := 0
	for range used {
		r := <-results
		all = append(all, r.lat...)
		timeouts += r.timeouts
		errs = append(errs, r.err)
	}
	return all, timeouts, errors.Join(errs...)
}

// grpcTimeout is d as a grpc-timeout header value.
func grpcTimeout(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%dS", d/time.Second)
	}
	return fmt.Sprintf("%dm", d/time.Millisecond)
}

// callgrind runs callgrind_control with arg on the service, under -callgrind.
func (b *bench) callgrind(arg string) error {
	if !b.o.callgrind {
		return nil
	}
	if out, err := exec.Command("callgrind_control", arg, fmt.Sprint(b.pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("callgrind_control %s: %w: %s", arg, err, out)
	}
	return nil
}

// instructions dumps callgrind's counters and returns the instructions
// executed since they were last zeroed; 0 without -callgrind.
func (b *bench) instructions(name string) (int64, error) {
	if !b.o.callgrind {
		return 0, nil
	}
	old, _ := filepath.Glob(filepath.Join(b.svc.Dir, "callgrind.out*"))
	if err := b.callgrind("-d"); err != nil {
		return 0, err
	}
	dumps, _ := filepath.Glob(filepath.Join(b.svc.Dir, "callgrind.out*"))
	for _, d := range dumps {
		if slices.Contains(old, d) {
			continue
		}
		data, err := os.ReadFile(d)
		if err != nil {
			return 0, err
		}
		if b.o.callgrindDir != "" {
			if err := os.WriteFile(filepath.Join(b.o.callgrindDir, "callgrind.out."+name), data, 0o644); err != nil {
				return 0, err
			}
		}
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "totals: "); ok {
				return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			}
		}
		return 0, fmt.Errorf("no totals in %s", d)
	}
	return 0, fmt.Errorf("callgrind wrote no new dump in %s", b.svc.Dir)
}

func createTokens(ctx context.Context, store *session.Store, n int) ([]string, error) {
	toks := make([]string, n)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	per := (n + 1) / 2
	for w := range 2 {
		wg.Go(func() {
			for i := w * per; i < min(n, (w+1)*per); i++ {
				_, tok, err := store.Create(ctx, "acme", fmt.Sprintf("user-%d", i))
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				toks[i] = tok
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return nil, *p
	}
	return toks, nil
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
