package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// childArg, as the first argument, makes the program the xDS server child
// instead of the benchmark (the benchmark re-executes itself with it, so
// that the server's CPU and memory are its own process's).
const childArg = "__xds-bench-server"

// maxPolicyBody bounds a policy posted to the child.
const maxPolicyBody = 64 << 20

// serveChild runs the control plane's xDS server on -grpc and a small HTTP
// control interface on -http until SIGINT or SIGTERM:
//
//	GET  /ready             200 once serving
//	POST /policy?version=V  body: policy JSON; SetPolicy(V, policy)
//	GET  /acked?version=V   {"acked": n}: connected nodes that ACKed V
//	GET  /debug/pprof/...   the server's profiles, to see where a push goes
func serveChild(args []string) error {
	fs := flag.NewFlagSet(childArg, flag.ContinueOnError)
	grpcAddr := fs.String("grpc", "127.0.0.1:0", "xDS gRPC address")
	httpAddr := fs.String("http", "127.0.0.1:0", "control HTTP address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := xds.New(xds.Options{Logger: log})
	g := grpc.NewServer(xds.ServerOptions()...)
	srv.Register(g)
	lis, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("POST /policy", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxPolicyBody))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p, err := policypb.ParseJSON(body)
		if err == nil {
			err = srv.SetPolicy(r.URL.Query().Get("version"), p)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /acked", func(w http.ResponseWriter, r *http.Request) {
		version := r.URL.Query().Get("version")
		n := 0
		for _, st := range srv.NodeStatus() {
			if st.Streams > 0 && st.AckedVersion == version {
				n++
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]int{"acked": n})
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	hs := &http.Server{Addr: *httpAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- g.Serve(lis) }()
	go func() { errc <- hs.ListenAndServe() }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
	srv.Close()
	g.Stop()
	if err := hs.Shutdown(context.Background()); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
