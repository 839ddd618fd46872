#!/usr/bin/env bash
# Runs the benchmark suite one benchmark at a time and puts each report into
# its section of bench/RESULTS.md (make bench). A proxy's cost only shows on
# an otherwise idle machine, so it refuses to start while the load average
# says something else is running (BENCH_FORCE=1 runs anyway, and the
# results say so). QUICK=1 shortens every run (a smoke test, not results).
#
#   bash bench/all.sh                 # everything, over an hour on 2 cores
#   bash bench/all.sh pgbench redis   # only these sections
#
# Sections: pgbench noisy pgcache redis nearcache extauthz idle rss goproxy budget hostile faults soak
#
# faults and soak run test/faults (issue 17) and put the figures its tests
# record into tables: faults the upstream-fault, drain, connection and
# hostile-client tests in their long forms (TG_FAULTS_FULL=1: 10,000 idle
# clients per protocol), soak the churn test for
# SOAK_DURATION (10m; hours if asked: SOAK_DURATION=4h). A failing test
# still fills its section, which then says the run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(pgbench noisy pgcache redis nearcache extauthz idle rss goproxy budget hostile move faults soak)

load=$(cut -d' ' -f1 /proc/loadavg)
busy=$(awk -v l="$load" -v n="$(nproc)" 'BEGIN { print (l > 0.25 * n) ? 1 : 0 }')
if [ "$busy" = 1 ] && [ "${BENCH_FORCE:-}" != 1 ]; then
	echo "bench: load average $load on $(nproc) cores: something else is running, and a busy neighbour hides a proxy's cost." >&2
	echo "bench: stop it and run again (BENCH_FORCE=1 to run anyway; the results will say so)." >&2
	exit 1
fi

go build -o bin/tenantguard ./cmd/tenantguard
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

version() { "$@" 2>&1 | head -1 || true; }
note="Run $(date -u +%Y-%m-%dT%H:%MZ) at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load average $load at the start"
[ "$busy" = 1 ] && note="$note: **the machine was busy, so these figures understate throughput and overstate the proxies' cost**"
note="$note. $(version postgres --version || version /usr/lib/postgresql/*/bin/postgres --version); $(version pgbouncer --version); $(version redis-server --version | cut -d' ' -f1-3); $(version nutcracker --version)."
quick=${QUICK:-}

run() { # section title command...
	local section=$1 title=$2
	shift 2
	echo "=== $title"
	"$@" -out "$tmp/$section.md"
	go run ./bench/results -section "$section" -title "$title" -note "$note" -in "$tmp/$section.md"
}

for s in "${sections[@]}"; do
	case $s in
	pgbench)
		if [ -n "$quick" ]; then d=2s r=1; else d=10s r=3; fi
		run pgbench "PostgreSQL: pgbench through tenantguard and PgBouncer" go run ./bench/pgbench -duration $d -rounds $r -loop ;;
	noisy)
		if [ -n "$quick" ]; then d=3s; else d=20s; fi
		run noisy "PostgreSQL: a quiet tenant next to a noisy one" go run ./bench/pgbench -noisy -duration $d ;;
	pgcache)
		if [ -n "$quick" ]; then d=2s r=1; else d=10s r=3; fi
		run pgcache "PostgreSQL: the result cache (cached point selects, and a cache-miss workload)" go run ./bench/pgbench -cache -duration $d -rounds $r -modes simple,prepared ;;
	redis)
		if [ -n "$quick" ]; then n=20000 r=1; else n=1000000 r=3; fi
		run redis "Redis: redis-benchmark through tenantguard and twemproxy" go run ./bench/redisbench -n $n -rounds $r ;;
	nearcache)
		if [ -n "$quick" ]; then n=20000 r=1; else n=1000000 r=3; fi
		run nearcache "Redis: the near cache, GET on a hot key set" go run ./bench/redisbench -near-cache -n $n -rounds $r ;;
	extauthz)
		if [ -n "$quick" ]; then d=2s r=1; else d=10s r=3; fi
		# The ext_authz-only build, as deployed (bench/extauthz.sh).
		make --no-print-directory extauthz
		run extauthz "ext_authz: checks as Envoy makes them" go run ./bench/extauthz -tenantguard bin/tenantguard-extauthz -duration $d -rounds $r ;;
	idle)
		if [ -n "$quick" ]; then n=200; else n=10000; fi
		run idle "Idle clients: memory per connection" go run ./bench/idle -n $n ;;
	rss)
		run rss "Resident memory of each binary" go run ./bench/rss ;;
	budget)
		if [ -n "$quick" ]; then r=1; else r=5; fi
		run budget "Connection budget: convergence when 20 sidecars join at once" go run ./bench/budget -sidecars 20 -budget 100 -rounds $r ;;
	hostile)
		if [ -n "$quick" ]; then d=3s r=1; else d=20s r=3; fi
		run hostile "Hostile clients: the quiet tenant's latency under each" go run ./bench/hostile -duration $d -rounds $r ;;
	move)
		if [ -n "$quick" ]; then n=10000 r=1; else n=100000 r=3; fi
		run move "Tenant move: rows copied per second and the tenant's pause at the switch" go run ./bench/move -rows $n -rate 300 -rounds $r ;;
	faults)
		# QUICK: the short forms of make test (1,000 idle clients per protocol).
		if [ -n "$quick" ]; then full=; else full=1; fi
		echo "=== Faults, drain, connections and hostile clients (test/faults)"
		TG_FAULTS_FULL=$full TG_FAULTS_RESULTS="$tmp/faults.md" go test -count=1 -timeout 60m -skip '^TestSoak$' ./test/faults ||
			echo "bench: test/faults failed; its section says so" >&2
		go run ./bench/results -section faults -title "Faults, drain, connections and hostile clients (test/faults)" -note "$note" -in "$tmp/faults.md" ;;
	soak)
		if [ -n "$quick" ]; then d=30s; else d=${SOAK_DURATION:-10m}; fi
		echo "=== Soak ($d)"
		TG_SOAK_DURATION=$d TG_FAULTS_RESULTS="$tmp/soak.md" go test -count=1 -timeout 0 -run '^TestSoak$' ./test/faults ||
			echo "bench: the soak failed; its section says so" >&2
		go run ./bench/results -section soak -title "Soak: churn for $d (test/faults TestSoak)" -note "$note" -in "$tmp/soak.md" ;;
	goproxy)
		echo "=== Go benchmarks: one query in process"
		{
			echo '```'
			go test ./bench/goproxy -run '^$' -bench . -benchmem -count 3 | grep -E '^(Benchmark|goos|goarch|cpu)'
			echo '```'
			echo
			echo 'allocs/op of Proxied minus Direct is the allocation per query the proxy adds (the client and the Go driver allocate the rest).'
		} >"$tmp/goproxy.md"
		go run ./bench/results -section goproxy -title "Go benchmarks: one query round trip in process" -note "$note" -in "$tmp/goproxy.md" ;;
	*)
		echo "bench: unknown section $s (pgbench noisy pgcache redis nearcache extauthz idle rss goproxy budget hostile move faults soak)" >&2
		exit 2 ;;
	esac
done
echo "bench: results in bench/RESULTS.md"
