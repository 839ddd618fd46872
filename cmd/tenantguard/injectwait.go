package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// injectWaitTimeout is how long `inject wait --url` polls by default: the
// injected sidecar's startup timeout (inject.DefaultStartupTimeout, which
// this file cannot import: it is in the sidecar-only build too, since the
// hooks run in the sidecar's container).
const injectWaitTimeout = 2 * time.Minute

// runInjectWait is `tenantguard inject wait`, the fallback layout's hooks:
// postStart waits for the sidecar to be ready (--url), preStop holds its
// SIGTERM back (--delay).
func runInjectWait(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("inject wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "poll this URL until it answers 200")
	timeout := fs.Duration("timeout", injectWaitTimeout, "give up polling after this long")
	delay := fs.Duration("delay", 0, "wait this long first")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *delay > 0 {
		t := time.NewTimer(*delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if *url == "" {
		return 0
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(wctx, http.MethodGet, *url, nil)
		if err != nil {
			fmt.Fprintln(stderr, "tenantguard inject wait:", err)
			return 2
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return 0
			}
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-t.C:
		case <-wctx.Done():
			t.Stop()
			fmt.Fprintf(stderr, "tenantguard inject wait: %s not ready within %v\n", *url, *timeout)
			return 1
		}
	}
}
