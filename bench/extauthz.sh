#!/usr/bin/env bash
# Benchmarks tenantguard's Envoy ext_authz service as Envoy calls it: two
# long-lived HTTP/2 connections, 1, 16 and 64 concurrent streams, cached and
# uncached verdicts; checks/s, p50/p99/p99.9, and the service's CPU,
# allocations, system calls and context switches per check, its memory
# (idle, after the cached and after the uncached runs), and the hybrid
# signature's cost next to Ed25519 alone. See bench/README.md.
# It measures the ext_authz-only build (make extauthz), as deployed; pass
# -tenantguard bin/tenantguard for the full binary's extauthz mode.
# Flags are passed on: bench/extauthz.sh -duration 10s -rounds 3 -out results.md
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/tenantguard ./cmd/tenantguard
make --no-print-directory extauthz
go run ./bench/extauthz -tenantguard bin/tenantguard-extauthz "$@"
