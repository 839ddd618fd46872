package redis

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// preAuth serves the commands allowed before authentication: AUTH, HELLO,
// PING and QUIT. AUTH and HELLO are terminated here, never forwarded.
func (s *clientConn) preAuth(name string, args [][]byte) error {
	switch name {
	case "auth":
		return s.reauth(args)
	case "hello":
		return s.hello(args)
	case "ping":
		s.writeLocal(pong(args))
		return nil
	case "quit":
		return s.quit()
	}
	s.writeLocal(resp.AppendError(nil, "NOAUTH Authentication required."))
	return nil
}

func pong(args [][]byte) []byte {
	if len(args) == 2 {
		return resp.AppendBulk(nil, args[1])
	}
	return resp.AppendSimple(nil, "PONG")
}

// reauth handles AUTH [user] password. A connection is bound to one tenant
// for its life: AUTH as another tenant is refused.
func (s *clientConn) reauth(args [][]byte) error {
	var user, pass []byte
	switch len(args) {
	case 2:
		s.writeLocal(resp.AppendError(nil, "WRONGPASS tenantguard needs AUTH <tenant> <secret>"))
		return nil
	case 3:
		user, pass = args[1], args[2]
	default:
		s.writeLocal(resp.AppendError(nil, "ERR wrong number of arguments for 'auth' command"))
		return nil
	}
	if msg := s.authenticate(string(user), string(pass)); msg != "" {
		s.writeLocal(resp.AppendError(nil, msg))
		return nil
	}
	s.writeLocal(resp.AppendSimple(nil, "OK"))
	return nil
}

// wrongpass answers every failed AUTH, whatever the reason, as Redis does.
const wrongpass = "WRONGPASS invalid username-password pair or user is disabled."

// authenticate checks a tenant's secret, a static one or a session token,
// and binds the client, returning a RESP error text on failure. A bound
// client stays with its tenant: AUTH again succeeds only for the same one.
func (s *clientConn) authenticate(user, pass string) string {
	if s.srv.cfg.Sessions != nil && s.srv.cfg.Sessions.IsToken(pass) {
		return s.authenticateToken(user, pass)
	}
	snap := s.srv.policy.Load()
	t, ok := snap.Tenant(user)
	var key []byte
	if ok && (s.tenant == nil || user == s.tenantID) {
		key, ok = s.srv.checkSecret(snap, t, pass)
	} else {
		ok = false
	}
	if !ok {
		s.srv.metrics.authFailures.WithLabelValues("password").Inc()
		return wrongpass
	}
	s.credential.Store(&key)
	if s.tenant != nil {
		s.setLease(nil, nil) // authenticated by the static secret from now on
		return ""
	}
	return s.bind(t.ID)
}

// authenticateToken checks a session token for user's tenant. On success
// the session holds the token's lease, replacing any it held; a token is
// never remembered as a static secret.
func (s *clientConn) authenticateToken(user, token string) string {
	fail := func(reason string, err error) string {
		s.srv.metrics.authFailures.WithLabelValues(reason).Inc()
		s.srv.log.Info("redis client authentication failed", "user", user, "reason", reason, "error", err, "client", s.id)
		return wrongpass
	}
	if s.tenant != nil && user != s.tenantID {
		return fail("token_invalid", errors.New("AUTH as another tenant on a bound connection"))
	}
	link := &clientend.Link{}
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.AuthTimeout)
	lease, err := s.srv.cfg.Sessions.Open(ctx, user, token, link.OnEnd)
	cancel()
	if err != nil {
		return fail(clientend.TokenFailureReason(err), err)
	}
	if s.tenant == nil {
		msg := ""
		if _, ok := s.srv.policy.Load().Tenant(user); !ok {
			msg = fail("token_invalid", errors.New("the policy has no such tenant"))
		} else {
			msg = s.bind(user)
		}
		if msg != "" {
			link.Detach()
			lease.Close()
			return msg
		}
	}
	s.credential.Store(nil)
	s.setLease(lease, link)
	return ""
}

// bind makes the client the tenant id's, as the current snapshot has it.
func (s *clientConn) bind(id string) string {
	ns, err := namespace.New(id, s.srv.cfg.Namespace)
	if err != nil {
		return "ERR tenantguard: " + err.Error()
	}
	t, snap, msg := s.srv.register(s, id)
	if msg != "" {
		return msg
	}
	key, c := s.srv.routeOf(snap, t)
	be, err := s.srv.routeFor(key, c, t.ID)
	if err != nil {
		s.srv.log.Error("cannot route a client to its tenant's Redis upstream", "tenant", t.ID, "client", s.id, "cluster", key.cluster, "error", err)
		s.srv.unbind(s)
		return "ERR tenantguard: tenant " + t.ID + " is placed on a Redis upstream this proxy cannot serve"
	}
	s.qmu.Lock()
	s.be, s.route = be, key
	s.qmu.Unlock()
	s.tenant, s.snap, s.ns, s.routeSnap = t, snap, ns, snap
	// Each upstream has its own near cache, kept by its tracking
	// connection's invalidations (placement.go).
	s.cache = be.near.tenant(t.ID)
	s.rwPol = s.srv.rulesPolicy.Load()
	s.rw = rules.NewRewriter(ns, s.rwPol)
	share := s.srv.share(t.ID)
	s.rate, s.load = &share.rate, &share.load
	s.label = s.srv.tenantLabel(t.ID)
	s.cmds = s.srv.metrics.commands.WithLabelValues(s.label)
	s.latency = s.srv.metrics.latency.WithLabelValues(s.label)
	s.rd.SetLimits(resp.DefaultLimits())
	_ = s.conn.SetReadDeadline(time.Time{})
	return ""
}

// checkSecret verifies a static secret against t's verifiers in snap,
// returning the StoredKey of the verifier it matched. A verified secret is
// remembered by its SHA-256, so reconnecting clients (a benchmark opening
// hundreds) do not pay PBKDF2 each time. What is remembered stands only for
// the snapshot that verified it: the cache is emptied when another snapshot
// is checked against (and by Reconcile), so a secret a new policy removed
// stops working at once, even for a client that used it before.
func (srv *Server) checkSecret(snap *policy.Snapshot, t *policy.Tenant, pass string) ([]byte, bool) {
	sum := sha256.Sum256([]byte(t.ID + "\x00" + pass))
	srv.mu.Lock()
	if srv.verSnap != snap {
		srv.verSnap = snap
		clear(srv.verified)
	}
	known, ok := srv.verified[t.ID]
	srv.mu.Unlock()
	if ok && subtle.ConstantTimeCompare(known.sum[:], sum[:]) == 1 {
		return known.storedKey, true
	}
	for _, v := range t.Verifiers() {
		if v.Verify(pass) {
			srv.mu.Lock()
			if srv.verSnap == snap {
				srv.verified[t.ID] = verifiedSecret{sum: sum, storedKey: v.StoredKey}
			}
			srv.mu.Unlock()
			return v.StoredKey, true
		}
	}
	return nil, false
}

// verifiedSecret is a static secret checkSecret verified: its SHA-256 (with
// the tenant id) and the StoredKey of the verifier it matched.
type verifiedSecret struct {
	sum       [32]byte
	storedKey []byte
}

// hello handles HELLO [protover [AUTH user pass] [SETNAME name]].
func (s *clientConn) hello(args [][]byte) error {
	proto := 2
	if s.resp3 {
		proto = 3
	}
	i := 1
	if len(args) > 1 {
		switch string(args[1]) {
		case "2":
			proto = 2
		case "3":
			proto = 3
		default:
			s.writeLocal(resp.AppendError(nil, "NOPROTO unsupported protocol version"))
			return nil
		}
		i = 2
	}
	var name []byte
	for i < len(args) {
		switch strings.ToLower(string(args[i])) {
		case "auth":
			if i+2 >= len(args) {
				s.writeLocal(resp.AppendError(nil, "ERR Syntax error in HELLO option 'auth'"))
				return nil
			}
			if msg := s.authenticate(string(args[i+1]), string(args[i+2])); msg != "" {
				s.writeLocal(resp.AppendError(nil, msg))
				return nil
			}
			i += 3
		case "setname":
			if i+1 >= len(args) {
				s.writeLocal(resp.AppendError(nil, "ERR Syntax error in HELLO option 'setname'"))
				return nil
			}
			name = args[i+1]
			i += 2
		default:
			s.writeLocal(resp.AppendError(nil, "ERR Syntax error in HELLO option '"+string(args[i])+"'"))
			return nil
		}
	}
	if s.tenant == nil {
		s.writeLocal(resp.AppendError(nil, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"))
		return nil
	}
	if name != nil {
		s.name = append([]byte(nil), name...)
	}
	if proto == 3 && !s.resp3 && s.up != nil && !s.dedicated {
		s.waitDrained() // replies owed in RESP2 go out first
	}
	s.resp3 = proto == 3
	s.writeLocal(s.helloReply(proto))
	return nil
}

func (s *clientConn) helloReply(proto int) []byte {
	kv := []struct {
		k string
		v []byte
	}{
		{"server", resp.AppendBulkString(nil, "redis")},
		{"version", resp.AppendBulkString(nil, s.be.upstreamVersion())},
		{"proto", resp.AppendInt(nil, int64(proto))},
		{"id", resp.AppendInt(nil, s.id)},
		{"mode", resp.AppendBulkString(nil, "standalone")},
		{"role", resp.AppendBulkString(nil, "master")},
		{"modules", resp.AppendArrayHeader(nil, 0)},
	}
	var b []byte
	if proto == 3 {
		b = resp.AppendMapHeader(b, len(kv))
	} else {
		b = resp.AppendArrayHeader(b, 2*len(kv))
	}
	for _, e := range kv {
		b = resp.AppendBulkString(b, e.k)
		b = append(b, e.v...)
	}
	return b
}
