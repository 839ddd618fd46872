#!/usr/bin/env bash
# Benchmarks Redis direct vs through tenantguard's Redis listener vs through
# twemproxy (nutcracker) with redis-benchmark, after running redis-benchmark's
# default test set through tenantguard with zero errors. Flags are passed on:
# bench/redis.sh -n 1000000 -rounds 3 -out results.md
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/tenantguard ./cmd/tenantguard
go run ./bench/redisbench "$@"
