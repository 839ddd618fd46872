#!/usr/bin/env bash
# Benchmarks tenantguard's Envoy ext_authz service: Check throughput and
# p50/p99 latency at 1 and 64 concurrent gRPC streams, cached and uncached
# verdicts, and the hybrid signature's cost next to Ed25519 alone.
# Flags are passed on: bench/extauthz.sh -duration 10s -rounds 3 -out results.md
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/tenantguard ./cmd/tenantguard
go run ./bench/extauthz "$@"
