// Package benchkit holds what the benchmark commands under bench/ share:
// proxy child processes (Service), their CPU and memory from /proc, free
// ports, runs of load tools (Tool), the report tables (Report, Table) and
// the command-line and signal plumbing (Main, Options).
package benchkit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// Main runs a benchmark command named prog: parse reads the command line
// (an error exits 2), then run gets a context that SIGINT or SIGTERM
// cancels (an error exits 1 with "prog: FAILED: …").
func Main[O any](prog string, parse func(args []string) (O, error), run func(context.Context, O) error) {
	o, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, prog+": FAILED:", err)
		os.Exit(1)
	}
}

// Options are the flags every benchmark command has.
type Options struct {
	Tenantguard string // the tenantguard binary
	Rounds      int    // times to run every target
	Out         string // markdown file for the results; "" = none
}

// Register adds -tenantguard, -rounds and -out to fs; metric is what the
// median over the rounds is taken of ("tps").
func (o *Options) Register(fs *flag.FlagSet, metric string) {
	fs.StringVar(&o.Tenantguard, "tenantguard", "bin/tenantguard", "tenantguard binary (built with go build if missing)")
	fs.IntVar(&o.Rounds, "rounds", 1, "times to run every target; the median "+metric+" is reported")
	fs.StringVar(&o.Out, "out", "", "also write the results as markdown to this file")
}

// Parse parses args with fs and rejects positional arguments and -rounds
// below 1.
func (o *Options) Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	return nil
}

// EnsureBinary builds tenantguard into path if it does not exist yet.
func EnsureBinary(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	Logf("building %s", path)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./cmd/tenantguard")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s ./cmd/tenantguard (run from the repository root): %w\n%s", path, err, out)
	}
	return nil
}

// Logf prints a progress line, prefixed with the time, to stderr.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
