#!/usr/bin/env bash
# Benchmarks direct PostgreSQL vs tenantguard (without and with row isolation)
# vs PgBouncer with pgbench, or with -noisy a quiet tenant's latency next to a
# noisy one. Flags are passed on: bench/pgbench.sh -duration 30s -rounds 3 -out results.md
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/tenantguard ./cmd/tenantguard
go run ./bench/pgbench "$@"
