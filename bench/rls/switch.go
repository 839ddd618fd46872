package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// switchCase is one way of running the point select from Go clients the
// way the sidecar sends it: when the tenant changes, the binding goes
// ahead of the statement in the same write, in its own Sync segment, and
// both replies are read after one round trip.
type switchCase struct {
	name  string
	table string
	again bool // bind another tenant before every transaction
	// prepared binds through a statement prepared once per connection.
	prepared bool
	// binding returns the statement and parameters that bind the
	// connection's backend to tenant, or "" to skip.
	binding func(tenant string, pid uint32, at time.Time) (string, []string)
}

// switchCases compare the binding before issue #10 with tenantguard's, once
// per connection and before every transaction, against no RLS.
func switchCases() []switchCase {
	// As the sidecar sent them: the old binding with its settings
	// statement, unnamed; tenantguard's prepared once per connection.
	old := func(tenant string, _ uint32, at time.Time) (string, []string) {
		return "SELECT pg_catalog.set_config($1, coalesce($2, (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = $1)), false)",
			[]string{"bench_old.binding", oldBinding(tenant, at)}
	}
	b := benchBinder()
	return []switchCase{
		{name: "none", table: variant{name: "none"}.table()},
		{name: "hmac-per-statement, bound once", table: variant{name: "hmac-per-statement"}.table(), binding: old},
		{name: "hmac-per-statement, switch every tx", table: variant{name: "hmac-per-statement"}.table(), binding: old, again: true},
		{name: "tenantguard, bound once", table: installedTable, binding: b.Statement, prepared: true},
		{name: "tenantguard, switch every tx", table: installedTable, binding: b.Statement, again: true, prepared: true},
	}
}

// switchResult is one case's runs.
type switchResult struct {
	c        switchCase
	tps      []float64
	txns     int64
	cpuTicks int64
}

// runSwitch runs every case o.Rounds times, rotating the order.
// Cases whose table is not among vs are left out.
func runSwitch(ctx context.Context, o options, s *server, vs []variant) ([]switchResult, error) {
	var cases []switchCase
	for _, c := range switchCases() {
		if slices.ContainsFunc(vs, func(v variant) bool { return v.table() == c.table }) {
			cases = append(cases, c)
		}
	}
	res := make([]switchResult, len(cases))
	for i, c := range cases {
		res[i].c = c
	}
	for round := range o.Rounds {
		for i := range cases {
			k := (i + round) % len(cases)
			before, err := s.cpuTicks()
			if err != nil {
				return nil, err
			}
			n, elapsed, err := runSwitchOnce(ctx, o, s, cases[k])
			if err != nil {
				return nil, fmt.Errorf("switch case %s: %w", cases[k].name, err)
			}
			if err := s.waitBackendsGone(ctx, appRole); err != nil {
				return nil, err
			}
			after, err := s.cpuTicks()
			if err != nil {
				return nil, err
			}
			res[k].tps = append(res[k].tps, float64(n)/elapsed.Seconds())
			res[k].txns += n
			res[k].cpuTicks += after - before
			benchkit.Logf("switch   round %d/%d %-36s %8.0f tx/s", round+1, o.Rounds, cases[k].name, res[k].tps[len(res[k].tps)-1])
		}
	}
	return res, nil
}

// runSwitchOnce runs o.clients connections for o.duration and returns the
// transactions they completed and the time they took.
func runSwitchOnce(ctx context.Context, o options, s *server, c switchCase) (int64, time.Duration, error) {
	conns := make([]*pgconn.PgConn, o.clients)
	defer func() {
		for _, pc := range conns {
			if pc != nil {
				pc.Close(context.WithoutCancel(ctx))
			}
		}
	}()
	for i := range conns {
		pc, err := pgconn.Connect(ctx, s.url(appRole))
		if err != nil {
			return 0, 0, err
		}
		conns[i] = pc
		if _, err := pc.Prepare(ctx, "sel", "SELECT abalance FROM "+c.table+" WHERE id = $1", nil); err != nil {
			return 0, 0, err
		}
		if c.prepared {
			sql, _ := c.binding(tenantID, pc.PID(), time.Now())
			if _, err := pc.Prepare(ctx, "bind", sql, nil); err != nil {
				return 0, 0, err
			}
		}
	}
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		first error
	)
	start := time.Now()
	for i, pc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := switchClient(runCtx, pc, c, o.rows, i)
			mu.Lock()
			defer mu.Unlock()
			total += n
			if err != nil && first == nil && !errors.Is(err, context.DeadlineExceeded) {
				first = err
			}
		}()
	}
	wg.Wait()
	return total, time.Since(start), first
}

// switchClient runs transactions on pc until ctx ends. A bound-once case
// binds acme first; a switching case alternates acme and globex. Every
// select must see the acme row exactly when bound to acme.
func switchClient(ctx context.Context, pc *pgconn.PgConn, c switchCase, rows, seed int) (int64, error) {
	pid := pc.PID()
	at := time.Now()
	tenant := tenantID
	bindNow := c.binding != nil
	var n int64
	for i := 0; ctx.Err() == nil; i++ {
		if c.again {
			tenant, bindNow = []string{tenantID, otherID}[i%2], true
		}
		at = at.Add(time.Microsecond)
		if now := time.Now(); now.After(at) {
			at = now
		}
		p := pc.StartPipeline(ctx)
		if bindNow {
			sql, args := c.binding(tenant, pid, at)
			params := make([][]byte, len(args))
			for j, a := range args {
				params[j] = []byte(a)
			}
			if c.prepared {
				p.SendQueryPrepared("bind", params, nil, nil)
			} else {
				p.SendQueryParams(sql, params, nil, nil, nil)
			}
			p.SendPipelineSync()
		}
		id := strconv.Itoa(1 + (i*7919+seed*104729)%rows)
		p.SendQueryPrepared("sel", [][]byte{[]byte(id)}, nil, nil)
		got, err := 0, p.Sync() // one write, one round trip
		if err == nil {
			got, err = readPipeline(p)
		}
		if cerr := p.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return n, err
		}
		if want := tenant == tenantID || c.binding == nil; (got == 1) != want {
			return n, fmt.Errorf("bound to %s, the select of id %s returned %d rows", tenant, id, got)
		}
		if !c.again {
			bindNow = false
		}
		n++
	}
	return n, ctx.Err()
}

// readPipeline reads every result of p up to its last Sync and returns the
// rows of the last query.
func readPipeline(p *pgconn.Pipeline) (int, error) {
	rows := 0
	for {
		r, err := p.GetResults()
		if err != nil {
			return 0, err
		}
		switch r := r.(type) {
		case *pgconn.ResultReader:
			res := r.Read()
			if res.Err != nil {
				return 0, res.Err
			}
			rows = len(res.Rows)
		case nil:
			return rows, nil
		}
	}
}

// switchTable reports the switch cases against none.
func switchTable(sw []switchResult, hz float64) benchkit.Table {
	t := benchkit.Table{Left: 1, Header: []string{"pipelined like the sidecar", "tx/s", "÷none", "server CPU µs/tx", "CPU ÷none"}}
	var noneTPS, noneCPU float64
	for _, r := range sw {
		tps, cpu := benchkit.Median(r.tps), benchkit.MsPer1k(r.cpuTicks, r.txns, hz)
		if r.c.name == "none" {
			noneTPS, noneCPU = tps, cpu
		}
		t.Rows = append(t.Rows, []string{r.c.name, benchkit.Num(tps, "%.0f"), benchkit.Ratio(tps, noneTPS),
			benchkit.Num(cpu, "%.1f"), benchkit.Ratio(cpu, noneCPU)})
	}
	return t
}
