// Command xds measures the control plane's policy push at fleet scale: it
// runs the xDS server (controlplane/xds) in a child process, connects N
// simulated data planes (each its own ADS stream, state of the world or
// delta, over shared gRPC connections), and for each of R rounds pushes a
// new policy version and measures the time until the last data plane has
// ACKed it (and the p50/p99 across data planes), the server's CPU for the
// push, and the server's memory with N data planes connected. See
// bench/README.md.
//
//	go run ./bench/xds -clients 1000 -rounds 5
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// verifier is a SCRAM-SHA-256 verifier every generated tenant uses.
const verifier = "SCRAM-SHA-256$4096:OLopLdLn2iIXV2xKEo1XcA==$//3M5CupSzKX1w6u8HiK635fFImcH0okPkDYYZHP8jQ=:ZiWR3X/MmfuYovCcz0sGV9woCQm3U1q95TjeelpKh+A="

// ackTimeout bounds the wait for every client's ACK of one version.
const ackTimeout = 2 * time.Minute

type options struct {
	clients   int
	perConn   int
	rounds    int
	tenants   int
	protocols []string
	out       string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		if err := serveChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "xds bench server:", err)
			os.Exit(1)
		}
		return
	}
	benchkit.Main("xdsbench", parseFlags, run)
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("xdsbench", flag.ContinueOnError)
	fs.IntVar(&o.clients, "clients", 1000, "simulated data planes, each with its own ADS stream")
	fs.IntVar(&o.perConn, "streams-per-conn", 10, "ADS streams per gRPC connection (1: a connection each)")
	fs.IntVar(&o.rounds, "rounds", 5, "policy versions pushed and measured after the first")
	fs.IntVar(&o.tenants, "tenants", 100, "tenants in the pushed policy (its size)")
	protocols := fs.String("protocols", "sotw,delta", "comma-separated: sotw, delta")
	fs.StringVar(&o.out, "out", "", "also write the results as markdown to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.clients < 1 || o.perConn < 1 || o.rounds < 1 || o.tenants < 1 {
		return o, errors.New("-clients, -streams-per-conn, -rounds and -tenants must be at least 1")
	}
	for _, p := range strings.Split(*protocols, ",") {
		switch p = strings.TrimSpace(p); p {
		case "sotw", "delta":
			if !slices.Contains(o.protocols, p) {
				o.protocols = append(o.protocols, p)
			}
		default:
			return o, fmt.Errorf("-protocols: %q is not sotw or delta", p)
		}
	}
	return o, nil
}

// result is one protocol's measurements.
type result struct {
	protocol    string
	conns       int
	initial     time.Duration // connect and ACK the first version, all clients
	rounds      []roundResult
	rssIdleKiB  int64 // server with the policy and no clients
	rssFleetKiB int64 // server with every client connected
}

type roundResult struct {
	version        string
	last, p50, p99 time.Duration
	cpuMs          float64 // server CPU from the push to the last ACK
}

func run(ctx context.Context, o options) error {
	raiseFDLimit()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	policyJSON := func(n int) []byte {
		p := &policypb.Policy{}
		for i := range o.tenants {
			p.Tenants = append(p.Tenants, &policypb.Tenant{Id: fmt.Sprintf("tenant-%04d", i), Credentials: []string{verifier},
				Limits: &policypb.Limits{MaxConnections: int32(n)}})
		}
		p.Tables = []*policypb.Table{{Name: "public.orders", TenantColumn: "tenant_id"}}
		js, _ := policypb.MarshalJSON(p)
		return js
	}
	var results []result
	for _, proto := range o.protocols {
		r, err := runProtocol(ctx, o, exe, proto, policyJSON)
		if err != nil {
			return fmt.Errorf("%s: %w", proto, err)
		}
		results = append(results, r)
	}
	return report(o, results, len(policyJSON(1))).Write(o.out)
}

// runProtocol measures one protocol against a fresh server child.
func runProtocol(ctx context.Context, o options, exe, proto string, policyJSON func(int) []byte) (res result, err error) {
	res.protocol = proto
	ports, err := benchkit.FreePorts(2)
	if err != nil {
		return res, err
	}
	grpcAddr, httpAddr := benchkit.LocalAddr(ports[0]), benchkit.LocalAddr(ports[1])
	svc, err := benchkit.NewService("xds server", "tg-bench-xds-")
	if err != nil {
		return res, err
	}
	svc.Addr = grpcAddr
	base := "http://" + httpAddr
	ready := func(ctx context.Context) error { return httpDo(ctx, http.MethodGet, base+"/ready", nil, nil) }
	if err := svc.Start(ctx, ready, exe, childArg, "-grpc", grpcAddr, "-http", httpAddr); err != nil {
		return res, err
	}
	benchkit.Logf("%s: server control and profiles on %s", proto, base)
	defer func() { err = errors.Join(err, svc.Stop()) }()

	push := func(version string, n int) error {
		return httpDo(ctx, http.MethodPost, base+"/policy?version="+version, policyJSON(n), nil)
	}
	if err := push("v1", 1); err != nil {
		return res, err
	}
	if res.rssIdleKiB, err = svc.RSSKiB(); err != nil {
		return res, err
	}

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	benchkit.Logf("%s: connecting %d clients over %d connections", proto, o.clients, (o.clients+o.perConn-1)/o.perConn)
	f := newFleet(o.clients)
	defer f.close()
	first := f.expect("v1", o.clients)
	f.begin(first)
	if err := f.start(fctx, grpcAddr, o.clients, o.perConn, proto == "delta"); err != nil {
		return res, err
	}
	res.conns = len(f.conns)
	if err := f.wait(ctx, first, ackTimeout); err != nil {
		return res, fmt.Errorf("initial sync: %w", err)
	}
	res.initial = slices.Max(first.acks)
	if res.rssFleetKiB, err = svc.RSSKiB(); err != nil {
		return res, err
	}
	benchkit.Logf("%s: all %d clients have v1 after %v", proto, o.clients, res.initial.Round(time.Millisecond))

	hz := float64(benchkit.ClockTicks())
	for i := range o.rounds {
		version := fmt.Sprintf("v%d", i+2)
		r := f.expect(version, o.clients)
		ticks, err := benchkit.CPUDuring(svc, func() error {
			f.begin(r)
			if err := push(version, i+2); err != nil {
				return err
			}
			return f.wait(ctx, r, ackTimeout)
		})
		if err != nil {
			return res, fmt.Errorf("push %s: %w", version, err)
		}
		// The server's own view agrees: every node ACKed the version (the
		// last ACKs may still be on their way).
		if err := serverSawAll(ctx, base, version, o.clients); err != nil {
			return res, fmt.Errorf("push %s: %w", version, err)
		}
		lat := slices.Sorted(slices.Values(r.acks))
		rr := roundResult{version: version, last: lat[len(lat)-1], p50: lat[len(lat)/2], p99: lat[len(lat)*99/100],
			cpuMs: float64(ticks) / hz * 1000}
		res.rounds = append(res.rounds, rr)
		benchkit.Logf("%s: %s ACKed by all %d clients after %v (p50 %v, p99 %v), server CPU %.0f ms",
			proto, version, o.clients, rr.last.Round(time.Millisecond), rr.p50.Round(time.Millisecond), rr.p99.Round(time.Millisecond), rr.cpuMs)
	}
	return res, svc.Alive()
}

func report(o options, results []result, policyBytes int) *benchkit.Report {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
	rep := &benchkit.Report{Setup: fmt.Sprintf(
		"xDS policy push: %d simulated data planes (%d ADS streams per gRPC connection), %d rounds, a policy of %d tenants (%d bytes as JSON).\n"+
			"Latencies run from the push (HTTP POST to the server child, which calls SetPolicy) to each data plane's ACK, measured at the data plane.",
		o.clients, o.perConn, o.rounds, o.tenants, policyBytes)}
	rounds := benchkit.Table{Left: 2, Header: []string{"protocol", "version", "last ACK ms", "p50 ms", "p99 ms", "server CPU ms"}}
	summary := benchkit.Table{Left: 1, Header: []string{"protocol", "connections", "initial sync ms", "median last ACK ms", "median p99 ms",
		"server CPU ms/push", "server RSS idle MiB", "server RSS with fleet MiB", "KiB per data plane"}}
	for _, r := range results {
		var last, p99, cpu []float64
		for _, rr := range r.rounds {
			rounds.Rows = append(rounds.Rows, []string{r.protocol, rr.version, ms(rr.last), ms(rr.p50), ms(rr.p99), fmt.Sprintf("%.0f", rr.cpuMs)})
			last = append(last, float64(rr.last))
			p99 = append(p99, float64(rr.p99))
			cpu = append(cpu, rr.cpuMs)
		}
		summary.Rows = append(summary.Rows, []string{r.protocol, fmt.Sprint(r.conns), ms(r.initial),
			ms(time.Duration(benchkit.Median(last))), ms(time.Duration(benchkit.Median(p99))), fmt.Sprintf("%.0f", benchkit.Median(cpu)),
			fmt.Sprintf("%.1f", float64(r.rssIdleKiB)/1024), fmt.Sprintf("%.1f", float64(r.rssFleetKiB)/1024),
			fmt.Sprintf("%.1f", float64(r.rssFleetKiB-r.rssIdleKiB)/float64(o.clients))})
	}
	rep.Tables = []benchkit.Table{summary, rounds}
	rep.Notes = []string{
		fmt.Sprintf("CPU is the server child's user+system time from /proc (%d ticks/s), from the push until the last ACK.", benchkit.ClockTicks()),
		"Simulated data planes decode and ACK; a real sidecar also validates and compiles the policy on its own CPU (tenantguard_policy_apply_seconds).",
		"Data planes and server share the machine: on a small one the clients' CPU shows up in the latencies.",
	}
	return rep
}

// serverSawAll polls the child until its NodeStatus has n nodes that ACKed
// version.
func serverSawAll(ctx context.Context, base, version string, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var acked struct{ Acked int }
		if err := httpDo(ctx, http.MethodGet, base+"/acked?version="+version, nil, &acked); err != nil {
			return err
		}
		if acked.Acked == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server saw %d ACKs, the clients sent %d", acked.Acked, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// httpDo sends a request to the child and decodes a JSON answer into out
// (if not nil); any status other than 2xx is an error.
func httpDo(ctx context.Context, method, url string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// raiseFDLimit lifts the open-file limit to its maximum: one connection
// per data plane needs a descriptor on each side.
func raiseFDLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
