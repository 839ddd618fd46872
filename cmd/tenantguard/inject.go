//go:build !sidecar && !extauthz

package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/injectorsvc"
)

// runInject is `tenantguard inject`: the offline form of the injector.
func runInject(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "wait" {
		return runInjectWait(ctx, args[1:], stderr)
	}
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("f", "", "manifest to inject (YAML or JSON, several documents); - for stdin")
	out := fs.String("o", "", "write the result here instead of stdout")
	cfgPath := fs.String("config", "", "the injector's configuration file (its sidecar section); default: built-in defaults")
	image := fs.String("image", "", "sidecar image (overrides the configuration)")
	native := fs.String("native", "", "true or false: native sidecars (Kubernetes 1.29+); default: the configuration's, true for auto")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *in == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: tenantguard inject -f FILE|- [-o FILE] [--config injector.yaml] [--image IMAGE] [--native true|false]")
		return 2
	}
	var cfg *config.Injector
	var err error
	if *cfgPath != "" {
		var data []byte
		if data, err = os.ReadFile(*cfgPath); err == nil {
			cfg, err = config.ParseInjector(*cfgPath, data, version, false)
		}
	} else {
		cfg, err = config.ParseInjector("(defaults)", nil, version, false)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tenantguard inject: config error:", err)
		return 1
	}
	sc := cfg.Sidecar
	if *image != "" {
		sc.Image = *image
	}
	switch *native {
	case "":
	case "true", "false":
		sc.Native = *native == "true"
	default:
		fmt.Fprintf(stderr, "tenantguard inject: --native %q: true or false\n", *native)
		return 2
	}
	if err := sc.Validate(); err != nil {
		fmt.Fprintln(stderr, "tenantguard inject:", err)
		return 1
	}
	r := stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			fmt.Fprintln(stderr, "tenantguard inject:", err)
			return 1
		}
		defer f.Close()
		r = f
	}
	// Written in full only once every document injected: never a
	// half-injected output.
	var buf bytes.Buffer
	reports, err := sc.Manifests(r, &buf)
	for _, rep := range reports {
		switch {
		case rep.Error != "":
			fmt.Fprintf(stderr, "%s: not injected (failure policy ignore): %s\n", rep.Object, rep.Error)
		case rep.Skipped != "":
			fmt.Fprintf(stderr, "%s: not injected: %s\n", rep.Object, rep.Skipped)
		}
		for _, w := range rep.Warnings {
			fmt.Fprintf(stderr, "%s: warning: %s\n", rep.Object, w)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tenantguard inject: %s: %v\n", *in, err)
		return 1
	}
	if *out == "" {
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			return 1
		}
		return 0
	}
	if err := writeAtomic(*out, buf.Bytes()); err != nil {
		fmt.Fprintln(stderr, "tenantguard inject:", err)
		return 1
	}
	return 0
}

// writeAtomic writes a file through a temporary file and a rename.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tenantguard-inject-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}

// runInjector is `tenantguard injector --config FILE`, the webhook.
func runInjector(ctx context.Context, args []string, stderr io.Writer) int {
	return runService(ctx, "injector", args, stderr,
		func(path string) (*config.Injector, error) { return config.LoadInjector(path, version) },
		func(ctx context.Context, cfg *config.Injector, log *slog.Logger) (runner, error) {
			return injectorsvc.Start(ctx, cfg, log)
		})
}
