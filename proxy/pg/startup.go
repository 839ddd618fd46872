package pg

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/internal/connbuf"
	"github.com/tenantguard/tenantguard/internal/errref"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
	wire "github.com/tenantguard/tenantguard/wire/pg"
	"github.com/tenantguard/tenantguard/wire/scram"
)

// preAuthMaxBody bounds messages before authentication: SASL messages are
// a few hundred bytes; a cleartext PasswordMessage holding the longest
// session token (5062 bytes) is 5063.
const preAuthMaxBody = 8 << 10

// handshake is one client connection's startup phase, in the order its
// steps run: negotiate (TLS, GSS, cancel), check the startup parameters,
// authenticate, admit (database, limits, registration), greet. Each step
// either succeeds or has told the client why not.
type handshake struct {
	srv    *Server
	conn   net.Conn
	br     *connbuf.Reader
	rd     *wire.Reader // messages from authentication on; the client's once admitted
	bw     *connbuf.Writer
	isTLS  bool
	msg    *pgproto3.StartupMessage
	params map[string]string // accepted startup parameters, by canonical name
	user   string
	dbName string
	t      *policy.Tenant
	// lease, for a session-token login, is held by the handshake until the
	// client owns it; link routes its end to the client.
	lease      policy.SessionLease
	link       *clientend.Link
	credential []byte // see login.credential
}

// startup runs the startup phase on a new client connection. It returns an
// authenticated client, or nil when the connection was a CancelRequest or
// was refused (the client has been told why). cancel ends the client's ctx.
func (srv *Server) startup(ctx context.Context, cancel context.CancelFunc, conn net.Conn) (*clientConn, error) {
	conn = connbuf.Raw(conn) // reads and writes without a hand-off of the P (package rawio)
	_ = conn.SetDeadline(time.Now().Add(srv.cfg.StartupTimeout))
	h := &handshake{srv: srv, conn: conn, br: connbuf.NewReader(conn)}
	if srv.cfg.Sessions != nil {
		h.link = &clientend.Link{} // only token logins use it
	}
	if err := h.negotiate(ctx); err != nil || h.msg == nil {
		srv.handshakeFailed(err)
		return nil, err
	}
	h.bw = connbuf.NewWriter(h.conn)
	if e := h.checkParameters(); e != nil {
		srv.acc.HandshakeFailed()
		return nil, h.refuse(reasonOf(e.Code), e)
	}
	if srv.consoleFor(h.dbName) {
		return nil, h.runConsole(ctx)
	}
	if err := h.authenticate(ctx); err != nil {
		srv.handshakeFailed(err)
		return nil, err
	}
	defer h.closeLease() // unless the session took it
	s, err := h.admit(ctx, cancel)
	if err != nil {
		return nil, err
	}
	if err := h.greet(s); err != nil {
		srv.unregister(s)
		s.pool.drop()
		return nil, err
	}
	return s, nil
}

// handshakeFailed counts a failed handshake towards the listener's
// accept pacing (netserve: failed_handshakes_per_second): garbage, a frame
// too large, a timeout, a wrong secret. A client that closes without
// sending anything (a TCP probe) is not counted.
func (srv *Server) handshakeFailed(err error) {
	if err != nil && !errors.Is(err, io.EOF) {
		srv.acc.HandshakeFailed()
	}
}

// negotiate answers SSLRequest (switching to TLS when configured),
// GSSENCRequest and CancelRequest until the StartupMessage arrives, and
// sets h.msg to it; h.msg stays nil after a CancelRequest.
func (h *handshake) negotiate(ctx context.Context) error {
	for {
		m, err := wire.ReadStartup(h.br)
		if err != nil {
			return fmt.Errorf("startup: %w", err)
		}
		switch m := m.(type) {
		case *pgproto3.SSLRequest:
			if err := h.startTLS(ctx); err != nil {
				return err
			}
		case *pgproto3.GSSEncRequest:
			if _, err := h.conn.Write([]byte{'N'}); err != nil {
				return err
			}
		case *pgproto3.CancelRequest:
			h.srv.cancel(m.ProcessID, m.SecretKey)
			return nil
		case *pgproto3.StartupMessage:
			h.msg = m
			return nil
		}
	}
}

// startTLS answers an SSLRequest: 'N' without a certificate, else 'S' and
// the handshake.
func (h *handshake) startTLS(ctx context.Context) error {
	if h.isTLS {
		return errors.New("startup: SSLRequest inside TLS")
	}
	if h.srv.cfg.TLS == nil {
		_, err := h.conn.Write([]byte{'N'})
		return err
	}
	// Bytes sent before the handshake would be read as if they came over
	// TLS (CVE-2021-23222): refuse them.
	if h.br.Buffered() > 0 {
		return errors.New("startup: data received before the TLS handshake")
	}
	if _, err := h.conn.Write([]byte{'S'}); err != nil {
		return err
	}
	tc := tls.Server(h.conn, h.srv.cfg.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	h.conn, h.br, h.isTLS = tc, connbuf.NewReader(tc), true
	return nil
}

// checkParameters accepts the startup parameters a client may set, and
// refuses the rest. A newer protocol minor version or _pq_ options get
// NegotiateProtocolVersion, and the client goes on with 3.0, as
// PostgreSQL does.
func (h *handshake) checkParameters() *wire.Error {
	var unknownOpts []string
	h.params = map[string]string{}
	for k, v := range h.msg.Parameters {
		var err error
		switch {
		case strings.HasPrefix(k, "_pq_."):
			unknownOpts = append(unknownOpts, k)
		case k == "replication":
			return wire.Fatalf(wire.CodeFeatureNotSupported, "replication connections are not supported by tenantguard")
		case k == "user" || k == "database":
			h.params[k] = v
		case k == "options":
			err = h.startupOptions(v)
		default:
			err = startupSetting(h.params, k, v, "startup parameter")
		}
		if e := settingRefused(err); e != nil {
			return e
		}
	}
	if minor := h.msg.ProtocolVersion & 0xffff; minor != 0 || len(unknownOpts) > 0 {
		b, _ := (&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknownOpts}).Encode(nil)
		_, _ = h.bw.Write(b)
	}
	if h.user = h.params["user"]; h.user == "" {
		return wire.Fatalf(wire.CodeInvalidAuthSpec, "no PostgreSQL user name specified in startup packet")
	}
	if h.dbName = h.params["database"]; h.dbName == "" {
		h.dbName = h.user
	}
	return nil
}

// startupOptions applies the settings of the "options" parameter.
func (h *handshake) startupOptions(v string) error {
	opts, err := parseOptions(v)
	if err != nil {
		return &paramError{fmt.Sprintf("startup option %v", err), false}
	}
	for _, kv := range opts {
		if err := startupSetting(h.params, kv[0], kv[1], "startup option"); err != nil {
			return err
		}
	}
	return nil
}

// settingRefused turns a refused startup setting into the client's FATAL.
func settingRefused(err error) *wire.Error {
	var pe *paramError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe) && !pe.badValue:
		return wire.Fatalf(wire.CodeInsufficientPrivilege, "%s", pe.msg)
	}
	return wire.Fatalf(wire.CodeInvalidParameterValue, "%v", err)
}

// authenticate runs SCRAM, or asks for a cleartext password that may be a
// session token (see auth.go), and sets h.t (and h.lease for a token).
func (h *handshake) authenticate(ctx context.Context) error {
	h.rd = wire.NewReader(h.br, preAuthMaxBody)
	l, err := h.srv.authenticate(ctx, h.rd, h.bw, h.user, h.srv.asksCleartext(h.conn.RemoteAddr(), h.isTLS), h.link)
	if err == nil {
		h.t, h.lease, h.credential = l.tenant, l.lease, l.credential
		return nil
	}
	var af *authFailure
	if errors.As(err, &af) {
		if af.reason != "password" {
			h.srv.log.Info("client authentication failed", "user", h.user, "reason", af.reason, "error", af.cause, "remote", h.conn.RemoteAddr().String())
		}
		return h.refuse(af.reason, af.reply)
	}
	var pe *wire.Error
	if errors.As(err, &pe) {
		return h.refuse(reasonOf(pe.Code), pe)
	}
	return err
}

// admit checks what the authenticated client asks for (its database, its
// tenant's connection cap) and registers its session.
func (h *handshake) admit(ctx context.Context, cancel context.CancelFunc) (*clientConn, error) {
	srv := h.srv
	if srv.pools[h.dbName] == nil {
		return nil, h.refuse("database", wire.Fatalf(wire.CodeInvalidDatabase, "database %q does not exist", h.dbName))
	}
	// The tenant's cluster serves its login too (the server's settings
	// come from there); t is the snapshot's that authenticated it.
	route, cluster := routeOf(h.dbName, srv.policy.Load(), h.t)
	p, err := srv.routeFor(route, cluster)
	if err != nil {
		ref := errref.New()
		srv.log.Warn("no pool for the tenant's cluster", "ref", ref, "tenant", h.t.ID, "error", err)
		return nil, h.refuse("refused", wire.Fatalf(wire.CodeConnectionFailure, "tenantguard: the tenant's database cluster is not reachable from this sidecar (ref %s)", ref))
	}
	registered := false
	defer func() {
		if !registered {
			p.drop()
		}
	}()
	defaults, err := p.paramDefaults(ctx)
	if err != nil {
		e := wire.Fatalf(wire.CodeTooManyConnections, "no server connection available to complete login")
		if !errors.Is(err, errPoolTimeout) {
			ref := errref.New()
			srv.log.Warn("could not connect to the upstream database", "ref", ref, "tenant", h.t.ID, "error", err)
			e = wire.Fatalf(wire.CodeConnectionFailure, "tenantguard: could not connect to the upstream database (ref %s)", ref)
		}
		return nil, h.refuse("refused", e)
	}
	h.rd.SetMaxBody(srv.cfg.MaxMessageBytes)
	s := &clientConn{
		dbName: h.dbName, tls: h.isTLS, connectedAt: time.Now(), credential: h.credential,
		srv: srv, conn: h.conn, br: h.br, bw: h.bw,
		rd:     h.rd,
		tenant: h.t.ID, t: h.t, pool: p, route: route, mode: srv.cfg.PoolMode,
		cancel: cancel,
	}
	for i, tp := range trackedParams {
		if v, ok := h.params[tp.name]; ok {
			s.params.put(i, v)
		} else if tp.reported {
			s.params.put(i, defaults[tp.name])
		}
	}
	s.label = srv.tenantLabel(s.tenant)
	s.queryDur = srv.metrics.queryDur.WithLabelValues(s.label)
	s.txDur = srv.metrics.txDuration.WithLabelValues(s.label)
	if e := srv.register(s); e != nil {
		return nil, h.refuse(reasonOf(e.Code), e)
	}
	registered = true
	return s, nil
}

// greet sends what a client sees after authentication, as PostgreSQL sends
// it (AuthenticationOk, the reported settings, BackendKeyData,
// ReadyForQuery), and hands the session its token lease.
func (h *handshake) greet(s *clientConn) error {
	defaults := s.pool.defaultsLoaded()
	b, _ := (&pgproto3.AuthenticationOk{}).Encode(nil)
	report := map[string]string{
		"client_encoding":               "UTF8",
		"server_encoding":               "UTF8",
		"standard_conforming_strings":   "on",
		"integer_datetimes":             "on",
		"is_superuser":                  "off",
		"session_authorization":         s.tenant,
		"server_version":                defaults["server_version"],
		"in_hot_standby":                defaults["in_hot_standby"],
		"default_transaction_read_only": defaults["default_transaction_read_only"],
		"scram_iterations":              defaults["scram_iterations"],
	}
	for i, tp := range trackedParams {
		if tp.reported {
			report[tp.name], _ = s.params.get(i)
		}
	}
	for k, v := range report {
		if v == "" && k != "application_name" {
			continue
		}
		b, _ = (&pgproto3.ParameterStatus{Name: k, Value: v}).Encode(b)
	}
	var sec [4]byte
	binary.BigEndian.PutUint32(sec[:], s.key.secret)
	b, _ = (&pgproto3.BackendKeyData{ProcessID: s.key.pid, SecretKey: sec[:]}).Encode(b)
	b = wire.AppendReadyForQuery(b, wire.TxIdle)
	// Registered clients are written to by Shutdown too: hold the write lock.
	s.wmu.Lock()
	_, err := s.bw.Write(b)
	if err == nil {
		err = s.bw.Flush()
	}
	s.wmu.Unlock()
	if err != nil {
		return err
	}
	_ = h.conn.SetDeadline(time.Time{})
	if h.lease != nil {
		s.lease, s.link = h.lease, h.link
		h.lease = nil // the session closes it when it finishes
		h.link.Attach(s.sessionEnded)
	}
	// An end signalled before the deadline was cleared lost its wake-up.
	if s.ending() {
		s.wake()
	}
	return nil
}

// refuse tells the client why it is not admitted, counting the reason.
func (h *handshake) refuse(reason string, e *wire.Error) error {
	h.srv.metrics.authFailures.WithLabelValues(reason).Inc()
	_, _ = h.bw.Write(e.AppendTo(nil))
	_ = h.bw.Flush()
	return e
}

// closeLease closes a token lease the session did not take.
func (h *handshake) closeLease() {
	if h.lease != nil {
		h.link.Detach()
		h.lease.Close()
	}
}

// scram runs SCRAM-SHA-256 for user and returns the tenant.
// An unknown user goes through the same exchange against a mock verifier,
// so a client cannot tell unknown users from wrong passwords.
func (srv *Server) scram(rd *wire.Reader, bw *connbuf.Writer, user string) (*policy.Tenant, []byte, error) {
	snap := srv.policy.Load()
	t, known := snap.Tenant(user)
	v := scram.MockVerifier(user, srv.mockSecret[:])
	if known && len(t.Verifiers()) > 0 {
		v = t.Verifiers()[0]
	}
	if err := scramExchange(rd, bw, v, known, user); err != nil {
		return nil, nil, err
	}
	return t, v.StoredKey, nil
}

// scramExchange runs one SCRAM-SHA-256 exchange against v; known false
// fails it at the end whatever the proof, as for an unknown user. A
// refusal is a *wire.Error (28P01, or 08P01 for a malformed exchange).
func scramExchange(rd *wire.Reader, bw *connbuf.Writer, v scram.Verifier, known bool, user string) error {
	authFailed := wire.Fatalf(wire.CodeInvalidPassword, "password authentication failed for user %q", user)
	conv, err := scram.NewServer(v)
	if err != nil {
		return err
	}
	b, _ := (&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scram.Mechanism}}).Encode(nil)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	typ, raw, err := rd.Next()
	if err != nil {
		return fmt.Errorf("read SASLInitialResponse: %w", err)
	}
	if typ != wire.MsgPassword {
		return wire.Fatalf(wire.CodeProtocolViolation, "expected SASL response, got message type %q", typ)
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(raw[wire.HeaderLen:]); err != nil {
		return wire.Fatalf(wire.CodeProtocolViolation, "malformed SASLInitialResponse: %v", err)
	}
	if init.AuthMechanism != scram.Mechanism {
		return wire.Fatalf(wire.CodeProtocolViolation, "client selected an invalid SASL authentication mechanism %q", init.AuthMechanism)
	}
	first, err := conv.Step(init.Data)
	if err != nil {
		return wire.Fatalf(wire.CodeProtocolViolation, "malformed SCRAM message: %v", err)
	}
	b, _ = (&pgproto3.AuthenticationSASLContinue{Data: first}).Encode(nil)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	typ, raw, err = rd.Next()
	if err != nil {
		return fmt.Errorf("read SASLResponse: %w", err)
	}
	if typ != wire.MsgPassword {
		return wire.Fatalf(wire.CodeProtocolViolation, "expected SASL response, got message type %q", typ)
	}
	var resp pgproto3.SASLResponse
	if err := resp.Decode(raw[wire.HeaderLen:]); err != nil {
		return wire.Fatalf(wire.CodeProtocolViolation, "malformed SASLResponse: %v", err)
	}
	final, err := conv.Step(resp.Data)
	if err != nil || !conv.Valid() || !known {
		return authFailed
	}
	b, _ = (&pgproto3.AuthenticationSASLFinal{Data: final}).Encode(nil)
	_, _ = bw.Write(b)
	return nil
}

func reasonOf(code string) string {
	switch code {
	case wire.CodeInvalidPassword:
		return "password"
	case wire.CodeInvalidDatabase:
		return "database"
	case wire.CodeTooManyConnections:
		return "limit"
	case wire.CodeProtocolViolation:
		return "protocol"
	}
	return "refused"
}

// newCancelKey draws a random BackendKeyData.
func newCancelKey() cancelKey {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return cancelKey{pid: binary.BigEndian.Uint32(b[:4]) & 0x7fffffff, secret: binary.BigEndian.Uint32(b[4:])}
}
