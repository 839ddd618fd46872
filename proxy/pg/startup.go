package pg

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/policy"
	wire "github.com/tenantguard/tenantguard/wire/pg"
	"github.com/tenantguard/tenantguard/wire/scram"
)

// Client buffers are small, as PgBouncer's 4 KiB pkt_buf: thousands of idle
// clients should cost little memory; large messages pass through in chunks.
const (
	clientReadBuffer  = 4 << 10
	clientWriteBuffer = 8 << 10
)

// preAuthMaxBody bounds messages before authentication: SASL messages are
// a few hundred bytes; a cleartext PasswordMessage holding the longest
// session token (5062 bytes) is 5063.
const preAuthMaxBody = 8 << 10

// allowedStartupParams are the startup parameters a client may set; anything
// else, "options" included, is refused and never forwarded.
var allowedStartupParams = map[string]string{
	"user":               "user",
	"database":           "database",
	"application_name":   "application_name",
	"client_encoding":    "client_encoding",
	"datestyle":          "DateStyle",
	"intervalstyle":      "IntervalStyle",
	"timezone":           "TimeZone",
	"extra_float_digits": "extra_float_digits",
}

// startup runs the startup phase on a new client connection: TLS
// negotiation, protocol checks, parameters and authentication (SCRAM, or a
// cleartext password or session token; see auth.go). It returns an
// authenticated session, or nil when the connection was a CancelRequest or
// was refused (the client has been told why). cancel ends the session's ctx.
func (srv *Server) startup(ctx context.Context, cancel context.CancelFunc, conn net.Conn) (*session, error) {
	_ = conn.SetDeadline(time.Now().Add(srv.cfg.StartupTimeout))
	br := bufio.NewReaderSize(conn, clientReadBuffer)
	isTLS := false
	var msg *pgproto3.StartupMessage
	for msg == nil {
		m, err := wire.ReadStartup(br)
		if err != nil {
			return nil, fmt.Errorf("startup: %w", err)
		}
		switch m := m.(type) {
		case *pgproto3.SSLRequest:
			if isTLS {
				return nil, errors.New("startup: SSLRequest inside TLS")
			}
			if srv.cfg.TLS == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return nil, err
				}
				continue
			}
			// Bytes sent before the handshake would be read as if they came
			// over TLS (CVE-2021-23222): refuse them.
			if br.Buffered() > 0 {
				return nil, errors.New("startup: data received before the TLS handshake")
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, err
			}
			tc := tls.Server(conn, srv.cfg.TLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			conn, br, isTLS = tc, bufio.NewReaderSize(tc, clientReadBuffer), true
		case *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case *pgproto3.CancelRequest:
			srv.cancel(m.ProcessID, m.SecretKey)
			return nil, nil
		case *pgproto3.StartupMessage:
			msg = m
		}
	}
	bw := bufio.NewWriterSize(conn, clientWriteBuffer)
	refuseFor := func(reason string, e *wire.Error) (*session, error) {
		srv.metrics.authFailures.WithLabelValues(reason).Inc()
		_, _ = bw.Write(e.AppendTo(nil))
		_ = bw.Flush()
		return nil, e
	}
	refuse := func(e *wire.Error) (*session, error) { return refuseFor(reasonOf(e.Code), e) }

	// Protocol 3.x with a newer minor version, or _pq_ options: answer
	// NegotiateProtocolVersion and go on with 3.0, as PostgreSQL does.
	var unknownOpts []string
	params := map[string]string{}
	for k, v := range msg.Parameters {
		if strings.HasPrefix(k, "_pq_.") {
			unknownOpts = append(unknownOpts, k)
			continue
		}
		canon, ok := allowedStartupParams[strings.ToLower(k)]
		switch {
		case k == "replication":
			return refuse(wire.Fatalf(wire.CodeFeatureNotSupported, "replication connections are not supported by tenantguard"))
		case k == "options":
			return refuse(wire.Fatalf(wire.CodeInsufficientPrivilege, `startup parameter "options" is not allowed: tenantguard does not forward command-line options`))
		case !ok:
			return refuse(wire.Fatalf(wire.CodeInsufficientPrivilege, "startup parameter %q is not allowed (allowed: application_name, client_encoding, DateStyle, IntervalStyle, TimeZone, extra_float_digits)", k))
		}
		params[canon] = v
	}
	if minor := msg.ProtocolVersion & 0xffff; minor != 0 || len(unknownOpts) > 0 {
		npv := &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknownOpts}
		b, _ := npv.Encode(nil)
		_, _ = bw.Write(b)
	}
	user := params["user"]
	if user == "" {
		return refuse(wire.Fatalf(wire.CodeInvalidAuthSpec, "no PostgreSQL user name specified in startup packet"))
	}
	dbName := params["database"]
	if dbName == "" {
		dbName = user
	}
	for k, v := range params {
		if err := checkParamValue(k, v); err != nil {
			return refuse(wire.Fatalf(wire.CodeInvalidParameterValue, "%v", err))
		}
	}

	br2 := wire.NewReader(br, preAuthMaxBody)
	link := &leaseLink{srv: srv}
	t, lease, err := srv.authenticate(ctx, br2, bw, user, srv.asksCleartext(conn.RemoteAddr(), isTLS), link)
	if err != nil {
		var af *authFailure
		if errors.As(err, &af) {
			if af.reason != "password" {
				srv.log.Info("client authentication failed", "user", user, "reason", af.reason, "error", af.cause, "remote", conn.RemoteAddr().String())
			}
			return refuseFor(af.reason, af.reply)
		}
		var pe *wire.Error
		if errors.As(err, &pe) {
			return refuse(pe)
		}
		return nil, err
	}
	if lease != nil {
		// Until the session owns it, the lease is ours to close.
		defer func() {
			if lease != nil {
				link.detach()
				lease.Close()
			}
		}()
	}

	p := srv.pools[dbName]
	if p == nil {
		return refuse(wire.Fatalf(wire.CodeInvalidDatabase, "database %q does not exist", dbName))
	}
	defaults, err := p.paramDefaults(ctx)
	if err != nil {
		e := wire.Fatalf(wire.CodeConnectionFailure, "could not connect to upstream database: %v", err)
		if errors.Is(err, errPoolTimeout) {
			e = wire.Fatalf(wire.CodeTooManyConnections, "no server connection available to complete login")
		}
		return refuse(e)
	}

	s := &session{
		srv:    srv,
		conn:   conn,
		br:     br,
		rd:     wire.NewReader(br, srv.cfg.MaxMessageBytes),
		bw:     bw,
		tenant: t.ID,
		t:      t,
		pool:   p,
		mode:   srv.cfg.PoolMode,
		params: map[string]string{},
		stmts:  map[string]*clientStmt{},
		cancel: cancel,
	}
	for _, tp := range trackedParams {
		if v, ok := params[tp.name]; ok {
			s.params[tp.name] = v
		} else if tp.reported {
			s.params[tp.name] = defaults[tp.name]
		}
	}
	tenant := t.ID
	label := srv.tenantLabel(tenant)
	s.label = label
	s.queryDur = srv.metrics.queryDur.WithLabelValues(label)
	s.txDur = srv.metrics.txDuration.WithLabelValues(label)
	s.errs = srv.metrics.errors.MustCurryWith(map[string]string{"tenant": label})
	if err := srv.register(s); err != nil {
		return refuse(err.(*wire.Error))
	}

	// What a client sees after authentication, as PostgreSQL sends it.
	out := (&pgproto3.AuthenticationOk{}).Encode
	b, _ := out(nil)
	report := map[string]string{
		"client_encoding":               "UTF8",
		"server_encoding":               "UTF8",
		"standard_conforming_strings":   "on",
		"integer_datetimes":             "on",
		"is_superuser":                  "off",
		"session_authorization":         tenant,
		"server_version":                defaults["server_version"],
		"in_hot_standby":                defaults["in_hot_standby"],
		"default_transaction_read_only": defaults["default_transaction_read_only"],
		"scram_iterations":              defaults["scram_iterations"],
	}
	for _, tp := range trackedParams {
		if tp.reported {
			report[tp.name] = s.params[tp.name]
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
	b = append(b, 'Z', 0, 0, 0, 5, 'I')
	// Registered sessions are written to by Shutdown too: hold the write lock.
	s.wmu.Lock()
	_, err = bw.Write(b)
	if err == nil {
		err = bw.Flush()
	}
	s.wmu.Unlock()
	if err != nil {
		srv.unregister(s)
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	if lease != nil {
		s.lease, s.link = lease, link
		lease = nil // the session closes it when it finishes
		link.attach(s)
	}
	// An end signalled before the deadline was cleared lost its wake-up.
	if s.ending() {
		s.wake()
	}
	return s, nil
}

// scram runs SCRAM-SHA-256 for user and returns the tenant.
// An unknown user goes through the same exchange against a mock verifier,
// so a client cannot tell unknown users from wrong passwords.
func (srv *Server) scram(rd *wire.Reader, bw *bufio.Writer, user string) (*policy.Tenant, error) {
	snap := srv.policy.Load()
	t, known := snap.Tenant(user)
	v := scram.MockVerifier(user, srv.mockSecret[:])
	if known && len(t.Verifiers()) > 0 {
		v = t.Verifiers()[0]
	}
	authFailed := wire.Fatalf(wire.CodeInvalidPassword, "password authentication failed for user %q", user)
	conv, err := scram.NewServer(v)
	if err != nil {
		return nil, err
	}
	b, _ := (&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scram.Mechanism}}).Encode(nil)
	if _, err := bw.Write(b); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	typ, raw, err := rd.Next()
	if err != nil {
		return nil, fmt.Errorf("read SASLInitialResponse: %w", err)
	}
	if typ != 'p' {
		return nil, wire.Fatalf(wire.CodeProtocolViolation, "expected SASL response, got message type %q", typ)
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(raw[5:]); err != nil {
		return nil, wire.Fatalf(wire.CodeProtocolViolation, "malformed SASLInitialResponse: %v", err)
	}
	if init.AuthMechanism != scram.Mechanism {
		return nil, wire.Fatalf(wire.CodeProtocolViolation, "client selected an invalid SASL authentication mechanism %q", init.AuthMechanism)
	}
	first, err := conv.Step(init.Data)
	if err != nil {
		return nil, wire.Fatalf(wire.CodeProtocolViolation, "malformed SCRAM message: %v", err)
	}
	b, _ = (&pgproto3.AuthenticationSASLContinue{Data: first}).Encode(nil)
	if _, err := bw.Write(b); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	typ, raw, err = rd.Next()
	if err != nil {
		return nil, fmt.Errorf("read SASLResponse: %w", err)
	}
	if typ != 'p' {
		return nil, wire.Fatalf(wire.CodeProtocolViolation, "expected SASL response, got message type %q", typ)
	}
	var resp pgproto3.SASLResponse
	if err := resp.Decode(raw[5:]); err != nil {
		return nil, wire.Fatalf(wire.CodeProtocolViolation, "malformed SASLResponse: %v", err)
	}
	final, err := conv.Step(resp.Data)
	if err != nil || !conv.Valid() || !known {
		return nil, authFailed
	}
	b, _ = (&pgproto3.AuthenticationSASLFinal{Data: final}).Encode(nil)
	_, _ = bw.Write(b)
	return t, nil
}

// checkParamValue validates startup parameter values before anything is
// replayed onto a server connection.
func checkParamValue(name, v string) error {
	if len(v) > 256 || strings.ContainsRune(v, 0) {
		return fmt.Errorf("invalid value for parameter %q", name)
	}
	switch name {
	case "client_encoding":
		// Upstream connections are pinned to UTF8; ASCII (psql's choice in
		// the C locale) is a subset of it.
		switch strings.ToUpper(strings.ReplaceAll(v, "-", "")) {
		case "UTF8", "UNICODE", "SQL_ASCII", "SQLASCII":
			return nil
		}
		return fmt.Errorf("client_encoding %q is not supported: tenantguard speaks UTF8 only", v)
	case "extra_float_digits":
		n, err := strconv.Atoi(v)
		if err != nil || n < -15 || n > 3 {
			return fmt.Errorf("invalid value for parameter %q: %q (an integer from -15 to 3)", name, v)
		}
	case "DateStyle":
		for _, tok := range strings.Split(v, ",") {
			switch strings.ToUpper(strings.TrimSpace(tok)) {
			case "ISO", "SQL", "POSTGRES", "GERMAN", "DMY", "MDY", "YMD", "EURO", "EUROPEAN", "US", "NONEURO", "NONEUROPEAN":
			default:
				return fmt.Errorf("invalid value for parameter %q: %q", name, v)
			}
		}
	case "IntervalStyle":
		switch strings.ToLower(v) {
		case "postgres", "postgres_verbose", "sql_standard", "iso_8601":
		default:
			return fmt.Errorf("invalid value for parameter %q: %q", name, v)
		}
	case "TimeZone":
		if !validTimeZone(v) {
			return fmt.Errorf("invalid value for parameter %q: %q", name, v)
		}
	}
	return nil
}

var utcOffset = regexp.MustCompile(`^[+-]?\d{1,2}(:\d{2}){0,2}$`)

// validTimeZone accepts zone names the system's tz database knows and
// numeric offsets; PostgreSQL ships the same IANA database.
func validTimeZone(v string) bool {
	if utcOffset.MatchString(v) {
		return true
	}
	if v == "" || strings.Contains(v, "..") || strings.HasPrefix(v, "/") {
		return false
	}
	_, err := time.LoadLocation(v)
	return err == nil
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
