# tenantguard — two commands on a fresh machine: `make demo` and `make test`.
GO      ?= go
BIN     := bin/tenantguard
PKGS    := ./...
# Integration tests start real PostgreSQL and redis-server processes; keep
# the run well under 15 minutes on 2 cores.
TESTFLAGS ?= -race -count=1 -timeout 12m

.PHONY: all build sidecar extauthz demo test vet fuzz bench faults soak clean deps-demo deps-test deps-bench

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tenantguard

# The sidecar-only build: sidecar, pg, extauthz keygen and version, without
# the control plane, ext_authz and the demo (and go-control-plane and the
# Envoy API they link), for a smaller resident set in every injected pod.
# grpcnotrace leaves out gRPC's golang.org/x/net/trace, whose templates'
# reflection keeps the linker from dropping unused methods (bench/rss).
SIDECAR_TAGS := sidecar,grpcnotrace
sidecar:
	$(GO) build -tags $(SIDECAR_TAGS) -o $(BIN)-sidecar ./cmd/tenantguard

# The ext_authz-only build: extauthz, extauthz keygen and version, without
# the data planes (pg_query_go, proxy/*), the control plane and the
# injector, for the ext_authz service's resident set (issue 11: ≤ 40 MiB).
# Nothing in it needs cgo: a static binary, which maps no libc either.
EXTAUTHZ_TAGS := extauthz,grpcnotrace
extauthz:
	CGO_ENABLED=0 $(GO) build -tags $(EXTAUTHZ_TAGS) -o $(BIN)-extauthz ./cmd/tenantguard

# Each target installs the Debian packages it needs when they are missing
# (as root; otherwise it prints the apt command), as .ci/run does.
deps-demo:
	@bash .ci/deps demo

deps-test:
	@bash .ci/deps test

deps-bench:
	@bash .ci/deps bench

demo: deps-demo build
	./$(BIN) demo --env-file tenantguard-demo.env

vet:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)

test: deps-test vet build
	$(GO) test $(TESTFLAGS) $(PKGS)

# The long forms of test/faults (issue 17), which make test runs short:
# 10,000 idle clients per protocol instead of 1,000.
faults: deps-test
	TG_FAULTS_FULL=1 $(GO) test -race -count=1 -timeout 60m -skip '^TestSoak$$' -v ./test/faults

# The soak: churn of clients, transactions, pub/sub, policy pushes and
# token revocations for SOAK_DURATION (make soak SOAK_DURATION=4h), RSS,
# goroutines and descriptors flat after the warm-up. The test bounds
# itself, hence no go test timeout.
SOAK_DURATION ?= 10m
soak: deps-test
	TG_SOAK_DURATION=$(SOAK_DURATION) $(GO) test -race -count=1 -timeout 0 -run '^TestSoak$$' -v ./test/faults

# Short fuzzing of every parser; FUZZTIME=1m make fuzz for longer runs.
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./wire/pg -run '^$$' -fuzz FuzzReadStartup -fuzztime $(FUZZTIME)
	$(GO) test ./wire/pg -run '^$$' -fuzz FuzzReader -fuzztime $(FUZZTIME)
	$(GO) test ./wire/scram -run '^$$' -fuzz FuzzServer -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/pg -run '^$$' -fuzz FuzzClientStartup -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/pg -run '^$$' -fuzz FuzzRewrite -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/pg -run '^$$' -fuzz FuzzBindMentionsClock -fuzztime $(FUZZTIME)
	$(GO) test ./wire/scram -run '^$$' -fuzz FuzzParseVerifier -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/pg/firewall -run '^$$' -fuzz FuzzFingerprint -fuzztime $(FUZZTIME)
	$(GO) test ./wire/resp -run '^$$' -fuzz FuzzReadCommand -fuzztime $(FUZZTIME)
	$(GO) test ./wire/resp -run '^$$' -fuzz FuzzReadReply -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/redis/keyspec -run '^$$' -fuzz FuzzLocate -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/redis/namespace -run '^$$' -fuzz FuzzNamespace -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/redis/rules -run '^$$' -fuzz FuzzRewrite -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/redis/clustermap -run '^$$' -fuzz FuzzParseTopology -fuzztime $(FUZZTIME)
	$(GO) test ./proxy/redis/clustermap -run '^$$' -fuzz FuzzParseRedirect -fuzztime $(FUZZTIME)
	$(GO) test ./extauthz/token -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./extauthz/authz -run '^$$' -fuzz FuzzCheck -fuzztime $(FUZZTIME)
	$(GO) test ./extauthz/authz -run '^$$' -fuzz FuzzScan -fuzztime $(FUZZTIME)
	$(GO) test ./controlplane/xds -run '^$$' -fuzz FuzzNodeIDs -fuzztime $(FUZZTIME)
	$(GO) test ./extauthz/authz -run '^$$' -fuzz FuzzWire -fuzztime $(FUZZTIME)
	$(GO) test ./extauthz/token -run '^$$' -fuzz FuzzEdKey -fuzztime $(FUZZTIME)
	$(GO) test ./controlplane/store -run '^$$' -fuzz FuzzLineDiff -fuzztime $(FUZZTIME)
	$(GO) test ./internal/inject -run '^$$' -fuzz FuzzPatch -fuzztime $(FUZZTIME)
	$(GO) test ./internal/inject -run '^$$' -fuzz FuzzDiffJSON -fuzztime $(FUZZTIME)
	$(GO) test ./internal/inject -run '^$$' -fuzz FuzzRewriteURL -fuzztime $(FUZZTIME)
	$(GO) test ./policy/policypb -run '^$$' -fuzz FuzzParseYAML -fuzztime $(FUZZTIME)
	$(GO) test ./policy/policypb -run '^$$' -fuzz FuzzParseJSON -fuzztime $(FUZZTIME)

# One benchmark at a time on an otherwise idle machine (bench/all.sh refuses
# to start on a busy one); each report lands in its section of
# bench/RESULTS.md. QUICK=1 for a smoke run, SECTIONS="pgbench redis" for some.
bench: deps-bench build
	bash bench/all.sh $(SECTIONS)

clean:
	rm -rf bin
