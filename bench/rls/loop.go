package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// A loop runs the point select many times inside one server backend, in a
// DO block, and times it: no client, no network, no other backend, so a
// busy machine moves it much less than pgbench's tps. "planned" runs it
// through EXECUTE (parsed and planned every time, as the simple protocol
// does); "cached" as static PL/pgSQL SQL (a cached plan, as prepared
// statements). Every statement is a transaction of its own (COMMIT in the
// loop), as in autocommit: per-transaction costs (locks, PL/pgSQL's
// per-transaction set-up of a function's expressions) count.
var loopKinds = []struct{ name, body string }{
	{"planned", `EXECUTE 'SELECT abalance FROM %[1]s WHERE id = $1' INTO r USING 1 + (i * 7919) %% %[2]d;`},
	{"cached", `SELECT abalance INTO r FROM %[1]s WHERE id = 1 + (i * 7919) %% %[2]d;`},
}

// loopResult is one variant's loops of one kind: µs per statement, wall
// time and the backend's CPU time, one of each per repetition.
type loopResult struct {
	wall, cpu []float64
}

// runLoops runs every kind × repetition × variant, rotating the order.
// results[kind][i] belongs to vs[i].
func runLoops(ctx context.Context, o options, s *server, vs []variant) (map[string][]*loopResult, error) {
	out := map[string][]*loopResult{}
	for _, k := range loopKinds {
		res := make([]*loopResult, len(vs))
		for i := range res {
			res[i] = &loopResult{}
		}
		for rep := range o.loopReps {
			for i := range vs {
				j := (i + rep) % len(vs)
				wall, cpu, err := loopOnce(ctx, o, s, vs[j], fmt.Sprintf(k.body, vs[j].table(), o.rows))
				if err != nil {
					return nil, fmt.Errorf("loop %s on %s: %w", k.name, vs[j].name, err)
				}
				res[j].wall = append(res[j].wall, wall)
				res[j].cpu = append(res[j].cpu, cpu)
			}
			benchkit.Logf("loop     %-8s repetition %d/%d done", k.name, rep+1, o.loopReps)
		}
		out[k.name] = res
	}
	return out, nil
}

// loopOnce binds a new connection as v needs, warms it up, then times
// o.loop statements; it returns µs per statement of wall and CPU time.
func loopOnce(ctx context.Context, o options, s *server, v variant, body string) (wall, cpu float64, err error) {
	login := appRole
	if v.login != "" {
		login = v.login
	}
	conn, err := pgx.Connect(ctx, s.url(login))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if v.bind != nil {
		if _, err := conn.Exec(ctx, v.bind(tenantID), pgx.QueryExecModeSimpleProtocol); err != nil {
			return 0, 0, err
		}
	}
	do := func(n int) string {
		return fmt.Sprintf("DO $$ DECLARE r int; BEGIN FOR i IN 1..%d LOOP %s COMMIT; END LOOP; END $$", n, body)
	}
	if _, err := conn.Exec(ctx, do(500)); err != nil {
		return 0, 0, err
	}
	pid := int(conn.PgConn().PID())
	before, err := cpuNanos(pid)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if _, err := conn.Exec(ctx, do(o.loop)); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start)
	after, err := cpuNanos(pid)
	if err != nil {
		return 0, 0, err
	}
	return float64(elapsed.Nanoseconds()) / 1e3 / float64(o.loop), float64(after-before) / 1e3 / float64(o.loop), nil
}

// cpuNanos is the time pid has run on a CPU, in nanoseconds: the first
// field of /proc/PID/schedstat, exact where /proc/PID/stat counts ticks.
func cpuNanos(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("empty /proc/%d/schedstat", pid)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

// loopTable reports the loops: the backend's CPU time and the wall time of
// the least disturbed repetition (the minimum), each against none and guc.
func loopTable(vs []variant, loops map[string][]*loopResult) benchkit.Table {
	t := benchkit.Table{Left: 2, Header: []string{"in-server loop", "kind", "CPU µs/stmt", "−none", "÷guc", "wall µs/stmt", "−none", "÷guc"}}
	none, guc := indexOf(vs, "none"), indexOf(vs, "guc")
	for _, k := range loopKinds {
		res := loops[k.name]
		wall := make([]float64, len(vs))
		cpu := make([]float64, len(vs))
		for i, r := range res {
			wall[i], cpu[i] = slices.Min(r.wall), slices.Min(r.cpu)
		}
		for i, v := range vs {
			t.Rows = append(t.Rows, []string{v.name, k.name,
				fmt.Sprintf("%.2f", cpu[i]), fmt.Sprintf("%+.2f", cpu[i]-cpu[none]), benchkit.Ratio(cpu[i], cpu[guc]),
				fmt.Sprintf("%.2f", wall[i]), fmt.Sprintf("%+.2f", wall[i]-wall[none]), benchkit.Ratio(wall[i], wall[guc])})
		}
	}
	return t
}
