package faults

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// cleanCodes are the SQLSTATEs a client may get when the upstream fails
// or the sidecar drains: connection failure, admin/crash shutdown, cannot
// connect now (breaker open, server starting up), too many connections.
var cleanCodes = map[string]bool{"08006": true, "08001": true, "57P01": true, "57P02": true, "57P03": true, "53300": true}

// pgLoad runs clients that each loop over read/write transactions, each
// recording its outcome, so that after a fault the ledger table can be
// checked against what clients were told:
//
//	BEGIN; UPDATE counters …; INSERT INTO ledger (client, seq); SELECT …; COMMIT
//
// Every statement has a deadline (hangAfter): one that passes it is a hang.
type pgLoad struct {
	url       string
	hangAfter time.Duration
	think     time.Duration // pause inside each transaction, so faults land mid-transaction

	mu         sync.Mutex
	committed  map[[2]int]bool // transactions whose COMMIT was acknowledged
	rolledBack map[[2]int]bool // failed before COMMIT was sent: must leave no row
	unknown    int             // failed at COMMIT: either outcome is right
	codes      map[string]int  // SQLSTATE (or "net: …") of every error
	hangs      []string
	firstErr   map[int]time.Time // per client, when it first saw an error
	lastOK     time.Time
	okAfter    map[int]time.Time    // per client, the first commit after an error
	begun      map[[2]int]time.Time // when each transaction's BEGIN was acknowledged

	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newPGLoad(url string, think time.Duration) *pgLoad {
	return &pgLoad{url: url, hangAfter: 20 * time.Second, think: think,
		committed: map[[2]int]bool{}, rolledBack: map[[2]int]bool{}, codes: map[string]int{},
		firstErr: map[int]time.Time{}, okAfter: map[int]time.Time{}, begun: map[[2]int]time.Time{},
		stop: make(chan struct{})}
}

// start runs n clients, numbered from base.
func (l *pgLoad) start(n, base int) {
	for i := range n {
		l.wg.Add(1)
		go l.client(base + i)
	}
}

// finish stops the clients and waits for them.
func (l *pgLoad) finish() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

func (l *pgLoad) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *pgLoad) client(id int) {
	defer l.wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for seq := 0; !l.stopped(); seq++ {
		if conn == nil || conn.IsClosed() {
			ctx, cancel := context.WithTimeout(context.Background(), l.hangAfter)
			c, err := pgx.Connect(ctx, l.url)
			cancel()
			if err != nil {
				l.noteErr(id, "connect", err)
				l.pause()
				continue
			}
			conn = c
		}
		stage, err := l.transaction(conn, id, seq)
		l.mu.Lock()
		key := [2]int{id, seq}
		switch {
		case err == nil:
			l.committed[key] = true
			l.lastOK = time.Now()
			if _, failed := l.firstErr[id]; failed {
				if _, ok := l.okAfter[id]; !ok {
					l.okAfter[id] = time.Now()
				}
			}
		case stage == "commit":
			l.unknown++
		default:
			l.rolledBack[key] = true
		}
		l.mu.Unlock()
		if err != nil {
			l.noteErr(id, stage, err)
			l.pause()
		}
	}
}

// pause backs off a little after an error, as a client would.
func (l *pgLoad) pause() {
	select {
	case <-l.stop:
	case <-time.After(20 * time.Millisecond):
	}
}

// transaction runs one transaction and returns the stage that failed.
func (l *pgLoad) transaction(conn *pgx.Conn, id, seq int) (string, error) {
	run := func(stage, sql string, args ...any) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), l.hangAfter)
		defer cancel()
		_, err := conn.Exec(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
		if ctx.Err() != nil {
			l.mu.Lock()
			l.hangs = append(l.hangs, fmt.Sprintf("client %d seq %d: %s hung for %s", id, seq, stage, l.hangAfter))
			l.mu.Unlock()
		}
		return stage, err
	}
	k := rand.IntN(1000) + 1
	if stage, err := run("begin", "BEGIN"); err != nil {
		return stage, err
	}
	l.mu.Lock()
	l.begun[[2]int{id, seq}] = time.Now()
	l.mu.Unlock()
	if stage, err := run("update", "UPDATE counters SET n = n + 1 WHERE k = $1", k); err != nil {
		return stage, err
	}
	if stage, err := run("insert", "INSERT INTO ledger (client, seq) VALUES ($1, $2)", id, seq); err != nil {
		return stage, err
	}
	if l.think > 0 {
		if stage, err := run("think", fmt.Sprintf("SELECT pg_sleep(%f)", l.think.Seconds())); err != nil {
			return stage, err
		}
	}
	return run("commit", "COMMIT")
}

func (l *pgLoad) noteErr(id int, stage string, err error) {
	code := sqlstate(err)
	if code == "" {
		code = "net: " + stage
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.codes[code]++
	if _, ok := l.firstErr[id]; !ok {
		l.firstErr[id] = time.Now()
	}
}

// report summarises the run for the log.
func (l *pgLoad) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("committed %d, failed before commit %d, failed at commit %d, errors %v",
		len(l.committed), len(l.rolledBack), l.unknown, l.codes)
}

// check verifies the outcome: no hang, every error a clean SQLSTATE
// (unclean lists what was not), every acknowledged commit in the ledger,
// no row of a transaction that failed before COMMIT was sent, and no row
// twice (a statement silently run again).
func (l *pgLoad) check(t *testing.T, ctx context.Context, adminURL string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.hangs) > 0 {
		t.Errorf("%d statements hung: %v", len(l.hangs), l.hangs[:min(5, len(l.hangs))])
	}
	for _, code := range slices.Sorted(maps.Keys(l.codes)) {
		if !cleanCodes[code] && !strings.HasPrefix(code, "net: ") {
			t.Errorf("%d errors with SQLSTATE %s, not a clean upstream-failure code", l.codes[code], code)
		}
	}
	c, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, "SELECT client, seq, count(*) FROM ledger GROUP BY client, seq")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[2]int]bool{}
	for rows.Next() {
		var client, seq, n int
		if err := rows.Scan(&client, &seq, &n); err != nil {
			t.Fatal(err)
		}
		key := [2]int{client, seq}
		seen[key] = true
		if n > 1 {
			t.Errorf("transaction %v is in the ledger %d times: a statement ran twice", key, n)
		}
		if l.rolledBack[key] {
			t.Errorf("transaction %v failed before COMMIT was sent, yet its row is in the ledger", key)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for key := range l.committed {
		if !seen[key] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged commits are not in the ledger", lost)
	}
}

// netErrors is the number of errors that carried no SQLSTATE.
func (l *pgLoad) netErrors() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for code, c := range l.codes {
		if strings.HasPrefix(code, "net: ") {
			n += c
		}
	}
	return n
}

// waitCommits waits until n more transactions have committed.
func (l *pgLoad) waitCommits(t *testing.T, n int, d time.Duration) {
	t.Helper()
	l.mu.Lock()
	target := len(l.committed) + n
	l.mu.Unlock()
	deadline := time.Now().Add(d)
	for {
		l.mu.Lock()
		got := len(l.committed)
		l.mu.Unlock()
		if got >= target {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d commits after %s: %s", got, target, d, l.report())
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// failedBegunBefore lists the transactions begun before t that did not
// commit.
func (l *pgLoad) failedBegunBefore(t time.Time) (begun int, failed []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, at := range l.begun {
		if at.Before(t) {
			begun++
			if !l.committed[key] {
				failed = append(failed, fmt.Sprint(key))
			}
		}
	}
	return begun, failed
}

var errNoCommit = errors.New("no commit yet")
