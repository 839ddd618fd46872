// Command rss measures the resident memory of an idle sidecar process, for
// each tenantguard binary given (by default the full build and the
// sidecar-only build, `-tags sidecar`, both built from this tree): the
// short-lived `tenantguard version` (peak RSS: package initialisation of
// everything linked), a sidecar with only its PostgreSQL listener and the
// policy from its file, and a sidecar with both listeners (PostgreSQL and
// Redis) and its policy from a real control plane over xDS, idle and again
// after one client session on each listener. It starts a throwaway
// PostgreSQL, redis-server and `tenantguard controlplane`, and prints
// VmRSS with the anonymous / file-backed split from /proc/PID/smaps. See
// bench/README.md.
//
//	go run ./bench/rss
//	go run ./bench/rss -bin before=/tmp/tenantguard-main -bin full -bin sidecar
package main

import (
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// sidecarTags are the build tags of the sidecar-only build, as the
// Makefile's SIDECAR_TAGS.
const sidecarTags = "sidecar,grpcnotrace"

// binary is one tenantguard binary under measurement.
type binary struct {
	name, path string
	tags       string // build tags when built here; "-" = given, not built
}

// binaries are the -bin flag's values: "full" and "sidecar" are built from
// this tree; "NAME=PATH" is a binary built elsewhere (another revision).
type binaries []binary

func (b *binaries) String() string { return fmt.Sprint(*b) }

func (b *binaries) Set(v string) error {
	name, path, given := strings.Cut(v, "=")
	switch {
	case given && name != "" && path != "":
		*b = append(*b, binary{name: name, path: path, tags: "-"})
	case !given && v == "full":
		*b = append(*b, binary{name: "full"})
	case !given && v == "sidecar":
		*b = append(*b, binary{name: "sidecar", tags: sidecarTags})
	default:
		return fmt.Errorf("%q: want full, sidecar or NAME=PATH", v)
	}
	return nil
}

type options struct {
	bins     binaries
	cpBin    string
	rounds   int
	settle   time.Duration
	cache    string
	out      string
	extraEnv []string
}

func main() { benchkit.Main("rss", parseFlags, run) }

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("rss", flag.ContinueOnError)
	fs.Var(&o.bins, "bin", "a binary to measure, repeatable: full, sidecar (both built here from this tree, as make build and make sidecar do) or NAME=PATH; default: full and sidecar")
	fs.StringVar(&o.cpBin, "controlplane", "", "binary that runs the control plane (a full build); default: the full build made here")
	fs.IntVar(&o.rounds, "rounds", 3, "processes started per binary and scenario; the median VmRSS is reported")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "idle time before a measurement")
	fs.StringVar(&o.cache, "cache", "cold", "the binary's page cache before each start: cold (dropped) or warm (all read)")
	env := fs.String("env", "", "extra environment for every measured process, comma-separated KEY=VALUE (e.g. GOGC=50)")
	fs.StringVar(&o.out, "out", "", "also write the results as markdown to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.rounds < 1 {
		return o, errors.New("-rounds must be at least 1")
	}
	if !slices.Contains(cacheModes, o.cache) {
		return o, fmt.Errorf("-cache %q: want one of %v", o.cache, cacheModes)
	}
	if len(o.bins) == 0 {
		o.bins = binaries{{name: "full"}, {name: "sidecar", tags: sidecarTags}}
	}
	if *env != "" {
		o.extraEnv = strings.Split(*env, ",")
	}
	return o, nil
}

func run(ctx context.Context, o options) (err error) {
	dir, err := os.MkdirTemp("", "tg-bench-rss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Every binary runs from a copy written with write(2) (see
	// pagecache.go); the control plane from its own.
	for i, b := range o.bins {
		linked := b.path
		if b.tags != "-" {
			if linked, err = build(ctx, dir, b); err != nil {
				return err
			}
		}
		if o.bins[i].path, err = install(linked, dir, b.name); err != nil {
			return err
		}
	}
	cpBin := o.cpBin
	if cpBin == "" {
		if cpBin, err = build(ctx, dir, binary{name: "full"}); err != nil {
			return err
		}
	}
	if cpBin, err = install(cpBin, dir, "controlplane"); err != nil {
		return err
	}
	u, err := startUpstreams(ctx, cpBin)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, u.close()) }()

	var results []result
	for _, b := range o.bins {
		for _, sc := range scenarios {
			r := result{bin: b, scenario: sc}
			for round := range o.rounds {
				ms, err := sc.run(ctx, b, u, o)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", b.name, sc.name, err)
				}
				benchkit.Logf("%s, %s, round %d: %s", b.name, sc.name, round+1, ms[0])
				r.rounds = append(r.rounds, ms)
			}
			results = append(results, r)
		}
	}
	return report(o, results).Write(o.out)
}

// build builds b from this tree into dir, unless it is there already.
func build(ctx context.Context, dir string, b binary) (string, error) {
	path := filepath.Join(dir, "linked-"+b.name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	args := []string{"build", "-o", path}
	if b.tags != "" {
		args = append(args, "-tags", b.tags)
	}
	args = append(args, "./cmd/tenantguard")
	benchkit.Logf("go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (run from the repository root): %w\n%s", strings.Join(args, " "), err, out)
	}
	return path, nil
}

// result is one binary in one scenario over the rounds; a round may
// measure the process more than once (idle, then after use).
type result struct {
	bin      binary
	scenario scenario
	rounds   [][]measurement
}

// measurement is one reading of a process.
type measurement struct {
	mem     memory
	peak    bool    // mem.vmRSS is the peak (a process that has exited)
	heapMiB float64 // the Go heap in use, from the sidecar's /metrics
}

func (m measurement) String() string {
	return fmt.Sprintf("VmRSS %.1f MiB (anon %.1f, file %.1f)", mib(m.mem.vmRSS), mib(m.mem.anon), mib(m.mem.file))
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// median returns the reading i of the round whose reading i has the median
// VmRSS, so that one row's split comes from one process.
func (r result) median(i int) measurement {
	ms := make([]measurement, len(r.rounds))
	for k, round := range r.rounds {
		ms[k] = round[i]
	}
	slices.SortFunc(ms, func(a, b measurement) int { return int(a.mem.vmRSS - b.mem.vmRSS) })
	return ms[len(ms)/2]
}

func report(o options, results []result) *benchkit.Report {
	host, _ := os.Hostname()
	rep := &benchkit.Report{Setup: fmt.Sprintf(
		"Sidecar resident memory, %s, %d rounds (median VmRSS; its process's split), measured after %s idle; host %s, %s; the binary's page cache %s before each start.\n"+
			"Control plane, PostgreSQL and redis-server run beside it; the sidecar's xDS stream is open and the policy (one tenant) applied.",
		time.Now().Format("2006-01-02"), o.rounds, o.settle, host, cpuNote(), o.cache)}
	if len(o.extraEnv) > 0 {
		rep.Setup += "\nEnvironment of the measured processes: " + strings.Join(o.extraEnv, " ") + "."
	}
	t := benchkit.Table{Left: 2, Header: []string{"binary", "process", "VmRSS MiB", "anon MiB", "file MiB",
		"binary text MiB", "binary rodata MiB", "other files MiB", "Go heap in use MiB"}}
	for _, r := range results {
		for i, label := range r.scenario.readings {
			m := r.median(i)
			rss := fmt.Sprintf("%.1f", mib(m.mem.vmRSS))
			if m.peak {
				rss += " (peak)"
			}
			heap := "—"
			if m.heapMiB > 0 {
				heap = fmt.Sprintf("%.1f", m.heapMiB)
			}
			split := func(kib int64) string {
				if m.peak {
					return "—"
				}
				return fmt.Sprintf("%.1f", mib(kib))
			}
			t.Rows = append(t.Rows, []string{r.bin.name, label, rss, split(m.mem.anon), split(m.mem.file),
				split(m.mem.binText), split(m.mem.binRO), split(m.mem.otherFiles), heap})
		}
	}
	rep.Tables = []benchkit.Table{t}
	var bins []string
	for _, b := range o.bins {
		var what string
		switch b.tags {
		case "-":
			what = "given"
		case "":
			what = "go build ./cmd/tenantguard"
		default:
			what = fmt.Sprintf("go build -tags %s ./cmd/tenantguard", b.tags)
		}
		bins = append(bins, fmt.Sprintf("%s (%s): %s", b.name, what, segments(b.path)))
	}
	rep.Notes = []string{
		"Binaries: " + strings.Join(bins, "; ") + ".",
		"Each runs from a copy written with write(2), as a container runtime unpacks an image; a binary fresh from the Go linker maps more (see bench/README.md). " +
			"cold: its pages dropped from the page cache (fadvise DONTNEED) before each start, so they come back by the faults' readahead; warm: all read before each start.",
		"VmRSS from /proc/PID/status; anon is the sum of smaps' Anonymous, file the rest of Rss: pages of the binary and of shared libraries in the page cache, which a pod's memory cgroup is charged for too (the first pod on a node to touch them pays). " +
			"`version` is a process that has exited: its peak (ru_maxrss) is shown, without a split.",
		"Go heap in use is go_memstats_heap_inuse_bytes, read from the sidecar's /metrics after its RSS.",
	}
	return rep
}

// segments describes bin's size: its text and read-only data.
func segments(bin string) string {
	f, err := elf.Open(bin)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var text, ro uint64
	for _, p := range f.Progs {
		switch {
		case p.Type != elf.PT_LOAD:
		case p.Flags&elf.PF_X != 0:
			text += p.Filesz
		case p.Flags&elf.PF_W == 0:
			ro += p.Filesz
		}
	}
	return fmt.Sprintf("text %.1f MiB, read-only data %.1f MiB", float64(text)/(1<<20), float64(ro)/(1<<20))
}

// cpuNote names the machine's CPU count.
func cpuNote() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "CPUs unknown"
	}
	return fmt.Sprintf("%d CPUs", strings.Count(string(b), "\nprocessor")+1)
}

// prepare sets bin's page cache as o.cache says, before a start.
func prepare(bin string, o options) error {
	cached, err := setPageCache(bin, o.cache)
	if err != nil {
		return err
	}
	if o.cache == "cold" && cached > 0.01 {
		return fmt.Errorf("%s: %.0f%% still in the page cache after dropping it (is it running elsewhere?)", bin, 100*cached)
	}
	return nil
}

// peakOf runs bin with args to its end and returns its peak RSS.
func peakOf(ctx context.Context, bin string, o options, args ...string) (measurement, error) {
	if err := prepare(bin, o); err != nil {
		return measurement{}, err
	}
	env := o.extraEnv
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return measurement{}, fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, out)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return measurement{}, errors.New("no rusage")
	}
	return measurement{mem: memory{vmRSS: ru.Maxrss}, peak: true}, nil
}
