package pg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// LISTEN/NOTIFY in transaction pooling, namespaced per tenant.
//
// A client's LISTEN and UNLISTEN never reach a pooled server connection:
// the proxy answers them and listens upstream itself, on one connection
// per pool kept for that (a notifier), to the tenant's namespaced channel
// "tg.<tenant>.<channel>". NOTIFY and pg_notify() are rewritten to send on
// that channel (firewall.NamespaceNotify), so one tenant's notifications
// never reach another's listeners. Notifications go to a client between
// its transactions, as PostgreSQL delivers them, with the channel name as
// the client gave it; one that arrives while the client is in a
// transaction waits for its end. Namespaced names are at most 63 bytes, as
// PostgreSQL's are: a tenant's channels may be up to 63 bytes minus the
// prefix. Notifications sent while the notifier reconnects are lost, as
// they are for a client whose own connection breaks.

// maxChannel is PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const maxChannel = 63

// maxQueuedNotes bounds the notifications waiting for one client.
const maxQueuedNotes = 1024

// noteWriteTimeout bounds a notification's write to a client that does
// not read; past it the client is disconnected.
const noteWriteTimeout = time.Second

// channelPrefix is tenant's namespace for notification channels.
func channelPrefix(tenant string) string { return "tg." + tenant + "." }

// upstreamChannel is the channel the proxy listens to for tenant's channel.
func upstreamChannel(tenant, channel string) string {
	ns := channelPrefix(tenant) + channel
	if len(ns) > maxChannel {
		ns = ns[:maxChannel] // as PostgreSQL truncates identifiers
	}
	return ns
}

// notifier is one pool's listening connection and who listens to what.
type notifier struct {
	pool *pool

	// cmd serialises LISTEN/UNLISTEN round trips and (re)connecting.
	cmd sync.Mutex

	mu      sync.Mutex
	subs    map[string]map[*clientConn]struct{} // upstream channel → listeners
	conn    *pgconn.HijackedConn
	w       *bufio.Writer
	replies chan error // the reader's answer to the command in flight
	closed  bool
	reader  sync.WaitGroup
}

func newNotifier(p *pool) *notifier {
	return &notifier{pool: p, subs: map[string]map[*clientConn]struct{}{}}
}

// listen adds s as a listener of its tenant's channel, listening upstream
// first if it is the channel's first listener. When it returns, every
// notification sent on the channel reaches s.
func (n *notifier) listen(ctx context.Context, s *clientConn, channel string) error {
	ns := upstreamChannel(s.tenant, channel)
	n.cmd.Lock()
	defer n.cmd.Unlock()
	n.mu.Lock()
	first := len(n.subs[ns]) == 0
	n.mu.Unlock()
	if first {
		if err := n.command(ctx, "LISTEN "+quoteIdent(ns)); err != nil {
			return err
		}
	}
	n.mu.Lock()
	if n.subs[ns] == nil {
		n.subs[ns] = map[*clientConn]struct{}{}
	}
	n.subs[ns][s] = struct{}{}
	n.mu.Unlock()
	return nil
}

// unlisten removes s as a listener of channel ("": of every channel),
// unlistening upstream from channels left without listeners.
func (n *notifier) unlisten(s *clientConn, channel string) {
	n.cmd.Lock()
	defer n.cmd.Unlock()
	var empty []string
	n.mu.Lock()
	for ns, ls := range n.subs {
		if channel != "" && ns != upstreamChannel(s.tenant, channel) {
			continue
		}
		if _, ok := ls[s]; !ok {
			continue
		}
		delete(ls, s)
		if len(ls) == 0 {
			delete(n.subs, ns)
			empty = append(empty, ns)
		}
	}
	up := n.conn != nil
	n.mu.Unlock()
	if !up {
		return
	}
	for _, ns := range empty {
		ctx, cancel := context.WithTimeout(context.Background(), n.pool.cfg.ConnectTimeout)
		if err := n.command(ctx, "UNLISTEN "+quoteIdent(ns)); err != nil {
			n.pool.log.Warn("notifier: unlisten failed", "error", err)
		}
		cancel()
	}
}

// command runs one statement on the listening connection, connecting it
// first if needed. Called with cmd held.
func (n *notifier) command(ctx context.Context, sql string) error {
	n.mu.Lock()
	up, closed := n.conn != nil, n.closed
	n.mu.Unlock()
	if closed {
		return errPoolClosed
	}
	if !up {
		if err := n.connect(ctx); err != nil {
			return err
		}
	}
	n.mu.Lock()
	w, replies := n.w, n.replies
	n.mu.Unlock()
	if w == nil {
		return errors.New("notifier connection lost")
	}
	if _, err := w.Write(wire.AppendQuery(nil, sql)); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	select {
	case err, ok := <-replies:
		if !ok {
			return errors.New("notifier connection lost")
		}
		return err
	case <-ctx.Done():
		n.drop() // its answer would be taken for the next command's
		return ctx.Err()
	}
}

// connect dials the listening connection and listens again to every
// channel that has listeners. Called with cmd held.
func (n *notifier) connect(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, n.pool.cfg.ConnectTimeout)
	defer cancel()
	pc, err := pgconn.ConnectConfig(dctx, n.pool.conf)
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		pc.Close(context.Background())
		return err
	}
	replies := make(chan error, 1)
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		_ = hj.Conn.Close()
		return errPoolClosed
	}
	n.conn, n.w, n.replies = hj, bufio.NewWriter(hj.Conn), replies
	channels := make([]string, 0, len(n.subs))
	for ns := range n.subs {
		channels = append(channels, ns)
	}
	n.reader.Add(1)
	n.mu.Unlock()
	go n.readLoop(hj, replies)
	for _, ns := range channels {
		if err := n.command(ctx, "LISTEN "+quoteIdent(ns)); err != nil {
			return err
		}
	}
	return nil
}

// readLoop reads the listening connection: notifications to deliver, and
// the answers to LISTEN and UNLISTEN.
func (n *notifier) readLoop(hj *pgconn.HijackedConn, replies chan error) {
	defer n.reader.Done()
	defer close(replies)
	fe := hj.Frontend
	var failed error
	for {
		msg, err := fe.Receive()
		if err != nil {
			break
		}
		switch m := msg.(type) {
		case *pgproto3.NotificationResponse:
			n.deliver(m)
		case *pgproto3.ErrorResponse:
			failed = fmt.Errorf("%s (SQLSTATE %s)", m.Message, m.Code)
		case *pgproto3.ReadyForQuery:
			replies <- failed
			failed = nil
		}
	}
	n.mu.Lock()
	if n.conn == hj {
		n.conn, n.w = nil, nil
	}
	reconnect := len(n.subs) > 0 && !n.closed
	n.mu.Unlock()
	_ = hj.Conn.Close()
	if reconnect {
		n.pool.log.Warn("notifier connection lost; reconnecting")
		n.reader.Add(1)
		go n.reconnect()
	}
}

// reconnect brings the listening connection back, with backoff, while any
// client listens.
func (n *notifier) reconnect() {
	defer n.reader.Done()
	delay := 100 * time.Millisecond
	for {
		n.mu.Lock()
		stop := n.closed || len(n.subs) == 0 || n.conn != nil
		n.mu.Unlock()
		if stop {
			return
		}
		n.cmd.Lock()
		err := n.connect(context.Background())
		n.cmd.Unlock()
		if err == nil {
			return
		}
		time.Sleep(delay) // backoff between attempts, not synchronisation
		delay = min(delay*2, 5*time.Second)
	}
}

// drop closes the listening connection (its read loop then reconnects).
func (n *notifier) drop() {
	n.mu.Lock()
	hj := n.conn
	n.mu.Unlock()
	if hj != nil {
		_ = hj.Conn.Close()
	}
}

// deliver hands a notification to the listeners of its channel, with the
// channel named as they know it.
func (n *notifier) deliver(m *pgproto3.NotificationResponse) {
	n.mu.Lock()
	ls := n.subs[m.Channel]
	targets := make([]*clientConn, 0, len(ls))
	for s := range ls {
		targets = append(targets, s)
	}
	n.mu.Unlock()
	for _, s := range targets {
		channel := strings.TrimPrefix(m.Channel, channelPrefix(s.tenant))
		s.queueNotification(m.PID, channel, m.Payload)
	}
}

// close stops the notifier; its goroutines are gone when it returns.
func (n *notifier) close() {
	n.mu.Lock()
	n.closed = true
	hj := n.conn
	n.mu.Unlock()
	if hj != nil {
		_ = hj.Conn.Close()
	}
	n.reader.Wait()
}

// quoteIdent quotes a channel name as an SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// --- the client's side ---

// answerListen runs the LISTEN and UNLISTEN statements of a simple Query
// for the client, and answers it as PostgreSQL would.
func (s *clientConn) answerListen(raw []byte) error {
	text, _, _ := wire.CString(raw[wire.HeaderLen:])
	out := s.applyListen(string(text), true)
	if sc := s.sc.Load(); sc != nil && s.queue(sc, reply{kind: wire.MsgReadyForQuery, prefix: out}) {
		// Inside a transaction: in order, before the server's ReadyForQuery.
		return s.send(sc, wire.SyncMessage)
	}
	s.wmu.Lock()
	_, _ = s.bw.Write(out)
	_, _ = s.bw.Write(wire.AppendReadyForQuery(nil, wire.TxIdle))
	_ = s.bw.Flush()
	s.wmu.Unlock()
	return nil
}

// applyListen runs the LISTEN and UNLISTEN statements of text for the
// client, and returns their CommandCompletes (withTags) or the error that
// stopped them, as messages for the client.
func (s *clientConn) applyListen(text string, withTags bool) []byte {
	ops, err := firewall.Channels(text)
	if err != nil {
		return wire.Errorf(wire.CodeFeatureNotSupported, "%v", err).AppendTo(nil)
	}
	var out []byte
	for _, op := range ops {
		tag := "UNLISTEN"
		if op.Listen {
			tag = "LISTEN"
			if err := s.pool.notifier.listen(s.ctx, s, op.Channel); err != nil {
				return s.upstreamError(wire.CodeConnectionFailure, "could not listen upstream", err).AppendTo(out)
			}
			s.listening.Store(true)
		} else {
			s.pool.notifier.unlisten(s, op.Channel)
		}
		if withTags {
			out, _ = (&pgproto3.CommandComplete{CommandTag: []byte(tag)}).Encode(out)
		}
	}
	return out
}

// listenNoop stands in, upstream, for a LISTEN or UNLISTEN that came in a
// Parse: it earns the same messages (ParseComplete, NoData, a command
// tag), changes nothing, and leaves no state on the pooled connection.
const listenNoop = "UNLISTEN tenantguard_noop"

// note is a notification waiting for its client.
type note struct {
	pid              uint32
	channel, payload string
}

// queueNotification queues a notification for the client and delivers it
// now if the client is between transactions.
func (s *clientConn) queueNotification(pid uint32, channel, payload string) {
	s.nmu.Lock()
	if len(s.notes) >= maxQueuedNotes {
		s.notes = s.notes[1:] // the oldest goes, as a full queue in PostgreSQL fails NOTIFY
		s.srv.log.Warn("notification dropped: the client is not reading them", "tenant", s.tenant, "pid", s.key.pid)
	}
	s.notes = append(s.notes, note{pid, channel, payload})
	s.nmu.Unlock()
	s.flushNotifications()
}

// flushNotifications writes the queued notifications if the client is
// between transactions (else its connection's release calls it again).
// A client that does not read them within noteWriteTimeout is cut off.
func (s *clientConn) flushNotifications() {
	if s.sc.Load() != nil {
		return
	}
	s.nmu.Lock()
	notes := s.notes
	s.notes = nil
	s.nmu.Unlock()
	if len(notes) == 0 {
		return
	}
	var b []byte
	for _, n := range notes {
		b, _ = (&pgproto3.NotificationResponse{PID: n.pid, Channel: n.channel, Payload: n.payload}).Encode(b)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.ended {
		return
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(noteWriteTimeout))
	_, err := s.bw.Write(b)
	if err == nil {
		err = s.bw.Flush()
	}
	_ = s.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		_ = s.conn.Close()
	}
}

// notificationBarrier delivers, before the ReadyForQuery that ends a
// transaction in which the client sent NOTIFY, the notifications that
// transaction sent to channels the client itself listens to, as
// PostgreSQL delivers a client's own notifications before its
// ReadyForQuery (psql and libpq's PQnotifies rely on it). The committing
// backend signalled every listener before its ReadyForQuery reached us, so
// once a round trip on the listening connection is done, those
// notifications have reached the notifier. Called by the read loop of the
// client's server connection, which then forwards the ReadyForQuery.
func (s *clientConn) notificationBarrier() {
	s.notified.Store(false)
	ctx, cancel := context.WithTimeout(s.ctx, s.pool.cfg.ConnectTimeout)
	defer cancel()
	n := s.pool.notifier
	n.cmd.Lock()
	err := n.command(ctx, "SELECT 1")
	n.cmd.Unlock()
	if err != nil {
		s.srv.log.Warn("notification barrier", "tenant", s.tenant, "error", err)
	}
	s.writeNotifications()
}

// writeNotifications writes the queued notifications now, whatever the
// client's state (the caller knows it is between messages).
func (s *clientConn) writeNotifications() {
	s.nmu.Lock()
	notes := s.notes
	s.notes = nil
	s.nmu.Unlock()
	if len(notes) == 0 {
		return
	}
	var b []byte
	for _, n := range notes {
		b, _ = (&pgproto3.NotificationResponse{PID: n.pid, Channel: n.channel, Payload: n.payload}).Encode(b)
	}
	s.wmu.Lock()
	if !s.ended {
		_, _ = s.bw.Write(b)
	}
	s.wmu.Unlock()
}
