package pg_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/test/harness"
)

// Golden wire transcripts of the proxy's rewrite path: what a client sent,
// what the proxy forwarded to PostgreSQL (its own statements among them),
// what PostgreSQL answered, and what the client received, for scripted
// message sequences. The server side is recorded by a relay between the
// proxy and a real PostgreSQL; files live in testdata/transcripts and are
// rewritten with
//
//	go test ./proxy/pg -run TestTranscripts -update
//
// Where the proxy should be invisible, the same script also runs directly
// against PostgreSQL and the client's view must match.

var update = flag.Bool("update", false, "rewrite the golden transcripts in testdata/transcripts")

// scriptStep is one write of a client script (messages pipelined in one
// write) and how many ReadyForQuery to read after it.
type scriptStep struct {
	send   []pgproto3.FrontendMessage
	ready  int
	cancel bool // send a CancelRequest right after the write
}

type transcriptCase struct {
	name      string
	isolated  bool
	invisible bool // the client's view equals PostgreSQL's own
	steps     []scriptStep
}

func q(sql string) *pgproto3.Query { return &pgproto3.Query{String: sql} }

var transcriptCases = []transcriptCase{
	{
		name:      "pipelined_parse_bind_sync_fresh_connection",
		invisible: true,
		steps: []scriptStep{{ready: 1, send: []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "s1", Query: "SELECT $1::int + 1 AS n"},
			&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("41")}},
			&pgproto3.Describe{ObjectType: 'P'},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
		}}, {ready: 1, send: []pgproto3.FrontendMessage{
			// The same statement again: prepared on this connection already.
			&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("1")}},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
		}}},
	},
	{
		name:     "refused_statement_inside_transaction",
		isolated: true,
		steps: []scriptStep{
			{ready: 1, send: []pgproto3.FrontendMessage{q("BEGIN")}},
			{ready: 1, send: []pgproto3.FrontendMessage{q("SELECT count(*) FROM orders")}},
			{ready: 1, send: []pgproto3.FrontendMessage{q("SET tenantguard.binding = 'globex'")}},
			{ready: 1, send: []pgproto3.FrontendMessage{q("SELECT 1")}},
			{ready: 1, send: []pgproto3.FrontendMessage{q("ROLLBACK")}},
		},
	},
	{
		name:      "reset_after_discard",
		invisible: true,
		steps: []scriptStep{
			{ready: 1, send: []pgproto3.FrontendMessage{q("SET search_path = pg_catalog")}},
			{ready: 1, send: []pgproto3.FrontendMessage{q("DISCARD TEMP")}},
			{ready: 1, send: []pgproto3.FrontendMessage{q("SELECT 1 AS after_reset")}},
		},
	},
	{
		name:      "cancel_during_pipeline",
		invisible: true,
		steps: []scriptStep{{ready: 2, cancel: true, send: []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT pg_sleep(30)"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
			&pgproto3.Parse{Query: "SELECT 2 AS after_cancel"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
		}}},
	},
}

func TestTranscripts(t *testing.T) {
	for _, tc := range transcriptCases {
		t.Run(tc.name, func(t *testing.T) {
			runTranscript(t, tc)
		})
	}
}

func runTranscript(t *testing.T, tc transcriptCase) {
	ctx := ctxT(t, 60*time.Second)
	pg := upstream(t)
	upURL := fmt.Sprintf("postgres://%s:%s@%%s/app?sslmode=disable", appRole, appPassword)
	direct := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/app?sslmode=disable", appRole, appPassword, pg.Port())
	upAddr := fmt.Sprintf("127.0.0.1:%d", pg.Port())
	if tc.isolated {
		pg = isolatedUpstream(t)
		upURL = fmt.Sprintf("postgres://%s:%s@%%s/iso?sslmode=disable", isoRole, isoPassword)
		upAddr = fmt.Sprintf("127.0.0.1:%d", pg.Port())
	}
	relay := startRelay(t, upAddr)
	tweak := func(c *proxypgConfig) {
		c.PoolSize = 1
		c.Databases = []proxypgDatabase{{Name: "app", URL: fmt.Sprintf(upURL, relay.addr)}}
	}
	var p *proxy
	if tc.isolated {
		p = startProxyWith(t, pg, isoSpec(), func(c *proxypgConfig) { tweak(c); c.Binder = isoBinder })
	} else {
		p = startProxy(t, pg, tweak)
	}
	running := func() error { return statementRunning(ctx, pg, "SELECT pg_sleep(30)") }
	// Before each step outside a transaction the proxy has given the
	// server connection back (a transaction-pooled client that sends its
	// next query while the connection is still attached keeps it, without
	// a reset), so the transcript does not depend on that race.
	released := func() {
		harness.Eventually(t, 10*time.Second, func() error {
			if n := p.metric(t, "tenantguard_pg_server_connections", map[string]string{"state": "active"}); n != 0 {
				return fmt.Errorf("%v server connections active", n)
			}
			return nil
		})
	}
	sent, got := runScript(ctx, t, p.acmeURL(), tc.steps, running, released)
	relay.wait(t)
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", tc.name)
	section(&b, "client sent", sent)
	section(&b, "server received", relay.frontend())
	section(&b, "server sent", relay.backend())
	section(&b, "client received", got)
	golden(t, filepath.Join("testdata", "transcripts", tc.name+".txt"), b.String())
	if tc.invisible {
		_, want := runScript(ctx, t, direct, tc.steps, running, func() {})
		if strings.Join(want, "\n") != strings.Join(got, "\n") {
			t.Errorf("the client's view differs from PostgreSQL's own:\nthrough the proxy:\n%s\ndirect:\n%s",
				strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func section(b *strings.Builder, title string, msgs []string) {
	fmt.Fprintf(b, "\n## %s\n", title)
	for _, m := range msgs {
		b.WriteString(m + "\n")
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (run with -update to accept):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// runScript logs in with pgconn, takes the raw connection and runs the
// steps, returning the rendered messages sent and received after login.
func runScript(ctx context.Context, t *testing.T, url string, steps []scriptStep, running func() error, beforeStep func()) (sent, got []string) {
	t.Helper()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	pid, key := pc.PID(), pc.SecretKey()
	addr := pc.Conn().RemoteAddr().String()
	hj, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hj.Conn.Close()
	fe := pgproto3.NewFrontend(hj.Conn, hj.Conn)
	idle := true // outside a transaction, by the last ReadyForQuery
	for _, st := range steps {
		if idle {
			beforeStep()
		}
		for _, m := range st.send {
			fe.Send(m)
			sent = append(sent, render(m))
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		if st.cancel {
			// Cancel once the statement is running upstream.
			harness.Eventually(t, 10*time.Second, running)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key}).Encode(nil)
			_, _ = c.Write(msg)
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
		}
		_ = hj.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		for n := 0; n < st.ready; {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("receive: %v (got so far: %v)", err, got)
			}
			got = append(got, render(m))
			if rfq, ok := m.(*pgproto3.ReadyForQuery); ok {
				n++
				idle = rfq.TxStatus == 'I'
			}
		}
	}
	fe.Send(&pgproto3.Terminate{})
	_ = fe.Flush()
	return sent, got
}

// statementRunning reports whether a statement starting with prefix is
// running on the server.
func statementRunning(ctx context.Context, pg *pgcluster.Cluster, prefix string) error {
	c, err := pgconn.Connect(ctx, pg.AdminURL("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	res := c.ExecParams(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND starts_with(query, $1)", [][]byte{[]byte(prefix)}, nil, nil, nil).Read()
	if res.Err != nil {
		return res.Err
	}
	if len(res.Rows) != 1 || string(res.Rows[0][0]) == "0" {
		return errors.New("not running yet")
	}
	return nil
}

// render prints a message as pgproto3's JSON, minus what varies between
// runs and servers.
func render(m any) string {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Sprintf("%T (unprintable: %v)", m, err)
	}
	var fields map[string]any
	if json.Unmarshal(b, &fields) == nil {
		for _, k := range []string{"File", "Line", "Routine", "Position", "SeverityUnlocalized"} {
			delete(fields, k)
		}
		for k, v := range fields {
			if v == nil || v == "" || v == float64(0) {
				delete(fields, k) // unset fields of ErrorResponse and friends
			}
		}
		b, _ = json.Marshal(fields)
	}
	s := string(b)
	for _, r := range normalizers {
		s = r.re.ReplaceAllString(s, r.with)
	}
	return s
}

var normalizers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\{"text":"(acme|globex)"\},\{"text":"\d+"\},\{"text":"\d+"\},\{"text":"[0-9a-f]{64}"\}`), `{"text":"$1"},<backend pid>,<issued at>,<signature>`},
	{regexp.MustCompile(`\(ref [0-9a-f]{8}\)`), "(ref <ref>)"},
	{regexp.MustCompile(`"ProcessID":\d+`), `"ProcessID":<pid>`},
	{regexp.MustCompile(`"TableOID":\d+`), `"TableOID":<oid>`},
}

// relay sits between the proxy and PostgreSQL and records both directions
// after the server connection's startup (its first ReadyForQuery).
type relay struct {
	addr     string
	upstream string
	ln       net.Listener
	mu       sync.Mutex
	fe, be   []string
	conns    sync.WaitGroup
}

func startRelay(t *testing.T, upstream string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String(), upstream: upstream, ln: ln}
	go r.accept()
	t.Cleanup(func() { _ = ln.Close() })
	return r
}

func (r *relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", r.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		started := make(chan struct{})
		r.conns.Add(2)
		go r.pipe(c, up, false, started)
		go r.pipe(up, c, true, started)
	}
}

// pipe copies from src to dst, recording messages: frontend ones (fromServer
// false) once the server has finished the startup, backend ones from the
// first ReadyForQuery on.
func (r *relay) pipe(src, dst net.Conn, fromServer bool, started chan struct{}) {
	defer r.conns.Done()
	defer dst.Close()
	var buf []byte
	chunk := make([]byte, 32<<10)
	untyped := !fromServer // the StartupMessage has no type byte
	live := false
	for {
		n, err := src.Read(chunk)
		if n > 0 {
			if _, werr := dst.Write(chunk[:n]); werr != nil {
				return
			}
			buf = append(buf, chunk[:n]...)
			for {
				if untyped {
					if len(buf) < 4 {
						break
					}
					l := int(binary.BigEndian.Uint32(buf))
					if len(buf) < l {
						break
					}
					buf, untyped = buf[l:], false
					continue
				}
				if len(buf) < 5 {
					break
				}
				l := int(binary.BigEndian.Uint32(buf[1:]))
				if len(buf) < 1+l {
					break
				}
				typ, body := buf[0], buf[5:1+l]
				if fromServer {
					if live {
						r.record(true, decodeBackend(typ, body))
					} else if typ == 'Z' {
						live = true
						close(started)
					}
				} else {
					select {
					case <-started:
						r.record(false, decodeFrontend(typ, body))
					default:
					}
				}
				buf = buf[1+l:]
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *relay) record(fromServer bool, s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fromServer {
		r.be = append(r.be, s)
	} else {
		r.fe = append(r.fe, s)
	}
}

// wait lets the relay catch up: the proxy keeps the connection, so wait
// until the recording stops growing.
func (r *relay) wait(t *testing.T) {
	t.Helper()
	last := -1
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		n := len(r.fe) + len(r.be)
		r.mu.Unlock()
		if n == last {
			return
		}
		last = n
		time.Sleep(200 * time.Millisecond) // quiet period: the proxy's reset, if any, has landed
	}
}

func (r *relay) frontend() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.fe...)
}

func (r *relay) backend() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.be...)
}

func decodeFrontend(typ byte, body []byte) string {
	var m pgproto3.FrontendMessage
	switch typ {
	case 'Q':
		m = &pgproto3.Query{}
	case 'P':
		m = &pgproto3.Parse{}
	case 'B':
		m = &pgproto3.Bind{}
	case 'D':
		m = &pgproto3.Describe{}
	case 'E':
		m = &pgproto3.Execute{}
	case 'C':
		m = &pgproto3.Close{}
	case 'S':
		m = &pgproto3.Sync{}
	case 'H':
		m = &pgproto3.Flush{}
	case 'X':
		m = &pgproto3.Terminate{}
	default:
		return fmt.Sprintf("%q (%d bytes)", typ, len(body))
	}
	if err := m.Decode(body); err != nil {
		return fmt.Sprintf("%q undecodable: %v", typ, err)
	}
	return render(m)
}

func decodeBackend(typ byte, body []byte) string {
	var m pgproto3.BackendMessage
	switch typ {
	case '1':
		m = &pgproto3.ParseComplete{}
	case '2':
		m = &pgproto3.BindComplete{}
	case '3':
		m = &pgproto3.CloseComplete{}
	case 'C':
		m = &pgproto3.CommandComplete{}
	case 'D':
		m = &pgproto3.DataRow{}
	case 'E':
		m = &pgproto3.ErrorResponse{}
	case 'N':
		m = &pgproto3.NoticeResponse{}
	case 'n':
		m = &pgproto3.NoData{}
	case 'S':
		m = &pgproto3.ParameterStatus{}
	case 'T':
		m = &pgproto3.RowDescription{}
	case 't':
		m = &pgproto3.ParameterDescription{}
	case 'Z':
		m = &pgproto3.ReadyForQuery{}
	case 'I':
		m = &pgproto3.EmptyQueryResponse{}
	default:
		return fmt.Sprintf("%q (%d bytes)", typ, len(body))
	}
	if err := m.Decode(body); err != nil {
		return fmt.Sprintf("%q undecodable: %v", typ, err)
	}
	return render(m)
}
