package redis

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/tenantguard/tenantguard/proxy/redis/clustermap"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// Scripts run as the tenant's own Redis user.
//
// A script's declared keys are prefixed like any key (rules), but a
// script can build any key name, so the proxy cannot confine it by
// rewriting. redis-server confines it instead: every script of a tenant
// runs on an upstream connection authenticated as that tenant's ACL user,
//
//	ACL SETUSER tenantguard-script:<enc> reset on #<sha256 of its password>
//	    ~<key prefix>* &<channel prefix>* +eval +evalsha +eval_ro +evalsha_ro
//	    +script|load +<each of rules.ScriptCommands()>
//
// so that redis-server refuses any key or channel a script names outside
// the tenant's namespace, and any command that could reach past it
// without naming a key (KEYS, SCAN, FLUSHALL, INFO, ...). The proxy
// creates the user, with its own upstream credential, the first time a
// tenant runs a script at this process, and deletes it (ACL DELUSER, which
// also closes its connections) when the tenant leaves the policy. Its
// password is derived from the proxy's upstream credential and the tenant
// (HMAC-SHA256), so every sidecar sharing the credential sets the same one.
//
// Script connections are multiplexed like the shared ones: one per tenant
// and protocol, opened at the tenant's first script and closed when the
// tenant has no client left at this sidecar. A client's replies stay in
// order across connections: before a command goes to another connection
// than the one its previous command went to, every reply owed is awaited.
//
// The script cache is server-wide and keyed by SHA1: each tenant's
// scripts are stored under a text of their own (rules.AppendScriptBody),
// and scriptCache maps the SHA1 a client knows to the one the server
// knows, per tenant. EVALSHA of a SHA1 the tenant never sent through this
// process answers NOSCRIPT (clients then send EVAL or SCRIPT LOAD), and
// SCRIPT EXISTS answers from the same map: neither can reach another
// tenant's script, whose server-side SHA1 differs even for the same text.

// scriptUserPrefix begins the name of every tenant's script user.
const scriptUserPrefix = "tenantguard-script:"

// maxScriptsPerTenant bounds the SHA1s kept per tenant; past it one is
// forgotten for each new one (its EVALSHA then answers NOSCRIPT, and the
// client sends the script again).
const maxScriptsPerTenant = 4096

// noScript is redis-server's reply to EVALSHA of an unknown script.
const noScript = "NOSCRIPT No matching script. Please use EVAL."

// scriptConnKey names a tenant's script connection for one protocol
// (and, on a cluster, one master; "" for one redis-server).
type scriptConnKey struct {
	tenant string
	resp3  bool
	node   string
}

// scriptUserKey names a tenant's script user on one node ("" for one
// redis-server): Redis Cluster does not replicate ACL users between
// masters, so each master the tenant's scripts run on gets its own.
type scriptUserKey struct {
	tenant, node string
}

// scriptCache maps, per tenant, the SHA1 of a script as the client sent
// it to the SHA1 of the tenant's form of it.
type scriptCache struct {
	mu       sync.Mutex
	byTenant map[string]map[[20]byte][20]byte
}

func (c *scriptCache) remember(tenant string, client, upstream [20]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byTenant == nil {
		c.byTenant = map[string]map[[20]byte][20]byte{}
	}
	m := c.byTenant[tenant]
	if m == nil {
		m = map[[20]byte][20]byte{}
		c.byTenant[tenant] = m
	}
	if _, ok := m[client]; !ok && len(m) >= maxScriptsPerTenant {
		for k := range m {
			delete(m, k)
			break
		}
	}
	m[client] = upstream
}

// lookup returns the upstream SHA1 of the script whose client SHA1 is sha
// (40 hex digits in any case, as EVALSHA takes it).
func (c *scriptCache) lookup(tenant string, sha []byte) ([20]byte, bool) {
	var k [20]byte
	if len(sha) != 40 {
		return k, false
	}
	if _, err := hex.Decode(k[:], sha); err != nil {
		return k, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	up, ok := c.byTenant[tenant][k]
	return up, ok
}

func (c *scriptCache) forget(tenant string, sha [20]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byTenant[tenant], sha)
}

func (c *scriptCache) flush(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byTenant, tenant)
}

// scriptUserName is the ACL user a tenant's scripts run as.
func scriptUserName(tenant string) string {
	return scriptUserPrefix + string(namespace.AppendEncodedTenant(nil, tenant))
}

// scriptPassword is the password of a tenant's script user, derived from
// the proxy's upstream credential.
func (srv *Server) scriptPassword(tenant string) string {
	mac := hmac.New(sha256.New, []byte("tenantguard script user\x00"+srv.cfg.UpstreamUser+"\x00"+srv.cfg.UpstreamPassword))
	mac.Write([]byte(tenant))
	return hex.EncodeToString(mac.Sum(nil))
}

// scriptUserRules is the ACL SETUSER command that creates or updates the
// tenant's script user.
func (srv *Server) scriptUserRules(ns *namespace.Namespace) [][]byte {
	hash := sha256.Sum256([]byte(srv.scriptPassword(ns.Tenant())))
	args := []string{"ACL", "SETUSER", scriptUserName(ns.Tenant()), "reset", "on",
		"#" + hex.EncodeToString(hash[:]),
		"~" + ns.KeyPrefix() + "*", "&" + ns.ChannelPrefix() + "*",
		"+eval", "+evalsha", "+eval_ro", "+evalsha_ro", "+script|load"}
	for _, c := range rules.ScriptCommands() {
		args = append(args, "+"+c)
	}
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a)
	}
	return out
}

// adminCommand runs one command on a new connection as the proxy's own
// user and returns an error for an error reply.
func (srv *Server) adminCommand(ctx context.Context, args [][]byte) error {
	u, err := srv.dialUpstream(ctx, false)
	if err != nil {
		return err
	}
	defer u.closeNoReader()
	_ = u.conn.SetDeadline(time.Now().Add(srv.cfg.ConnectTimeout))
	if _, err := u.conn.Write(resp.AppendCommand(nil, args)); err != nil {
		return err
	}
	rep, err := u.rr.ReadReply()
	if err != nil {
		return err
	}
	if t := rep.Root().Type(); t == resp.TypeSimpleError || t == resp.TypeBlobError {
		return errors.New(string(rep.Root().Bytes()))
	}
	return nil
}

// adminCommandOn is adminCommand on a cluster node's control connection
// (node "": adminCommand, on the one redis-server).
func (srv *Server) adminCommandOn(ctx context.Context, node string, args [][]byte) error {
	if node == "" {
		return srv.adminCommand(ctx, args)
	}
	var replyErr error
	err := srv.cluster.roundTrip(ctx, node, func(u *upConn) error {
		rep, err := u.call(args)
		if err != nil {
			return err
		}
		if t := rep.Root().Type(); t == resp.TypeSimpleError || t == resp.TypeBlobError {
			replyErr = errors.New(string(rep.Root().Bytes()))
		}
		return nil
	})
	return errors.Join(err, replyErr)
}

// ensureScriptUser creates or updates the tenant's script user on node
// ("" for one redis-server), unless this process did since the tenant
// last changed (force: again).
func (srv *Server) ensureScriptUser(ctx context.Context, ns *namespace.Namespace, node string, force bool) error {
	key := scriptUserKey{ns.Tenant(), node}
	srv.mu.Lock()
	done := srv.scriptUsers[key]
	srv.mu.Unlock()
	if done && !force {
		return nil
	}
	if err := srv.adminCommandOn(ctx, node, srv.scriptUserRules(ns)); err != nil {
		return fmt.Errorf("%w: set up the script user of tenant %s (ACL SETUSER): %w", errScriptUser, ns.Tenant(), err)
	}
	srv.mu.Lock()
	if snap := srv.policy.Load(); snap != nil {
		if _, ok := snap.Tenant(ns.Tenant()); ok {
			srv.scriptUsers[key] = true
		}
	}
	srv.mu.Unlock()
	srv.log.Info("redis script user set up", "tenant", ns.Tenant(), "user", scriptUserName(ns.Tenant()), "node", node)
	return nil
}

// scriptNode is the node a script command of s runs on: "" for one
// redis-server; on a cluster, the master of the slot of its keys (the
// rules made sure they share one: CROSSSLOT otherwise), or of the
// tenant's own prefix for a script without keys.
func (s *clientConn) scriptNode(ctx context.Context, p plan) (string, error) {
	c := s.be.cluster
	if c == nil {
		return "", nil
	}
	slot := uint16(p.slot)
	if p.slot == noSlot {
		slot = clustermap.KeySlot([]byte(s.ns.KeyPrefix()))
	}
	return c.masterFor(ctx, slot)
}

// scriptConn returns the tenant's script connection in the client's
// protocol to node (see scriptNode), dialling it (and setting up the
// tenant's user there) if needed.
func (srv *Server) scriptConn(ctx context.Context, s *clientConn, node string) (*upConn, error) {
	key := scriptConnKey{s.tenantID, s.resp3, node}
	srv.mu.Lock()
	u := srv.scriptUp[key]
	srv.mu.Unlock()
	if u != nil {
		return u, nil
	}
	if srv.breaker.State() == gobreaker.StateOpen {
		return nil, gobreaker.ErrOpenState
	}
	if err := srv.ensureScriptUser(ctx, s.ns, node, false); err != nil {
		return nil, err
	}
	addr := node
	if addr == "" {
		addr = srv.cfg.Upstream
	}
	user, pass := scriptUserName(s.tenantID), srv.scriptPassword(s.tenantID)
	u, err := srv.dialAs(ctx, addr, s.resp3, user, pass)
	var he *handshakeError
	if errors.As(err, &he) && strings.HasPrefix(he.msg, "WRONGPASS") {
		// Deleted or changed since this process set it up (another
		// sidecar's credential, an operator, a replica promoted to
		// master that never had it): set it up again, once.
		if err = srv.ensureScriptUser(ctx, s.ns, node, true); err == nil {
			u, err = srv.dialAs(ctx, addr, s.resp3, user, pass)
		}
	}
	if errors.As(err, &he) {
		err = fmt.Errorf("%w: %s: %w", errScriptUser, user, err)
	}
	if err != nil {
		return nil, err
	}
	srv.mu.Lock()
	if srv.acc.Draining() || srv.perTenant[s.tenantID] == 0 {
		srv.mu.Unlock()
		u.closeNoReader()
		return nil, errors.New("shutting down")
	}
	if cur := srv.scriptUp[key]; cur != nil {
		srv.mu.Unlock()
		u.closeNoReader()
		return cur, nil
	}
	u.confined = true
	srv.scriptUp[key] = u
	srv.mu.Unlock()
	srv.startReader(u)
	return u, nil
}

// tenantScriptConnsLocked takes the tenant's script connections out of
// the server's map and returns them, to close. srv.mu held.
func (srv *Server) tenantScriptConnsLocked(tenant string) []*upConn {
	var out []*upConn
	for k, u := range srv.scriptUp {
		if k.tenant == tenant {
			out = append(out, u)
			delete(srv.scriptUp, k)
		}
	}
	return out
}

// dropScriptUsers deletes the script users of tenants the policy no
// longer has, and closes their connections; in the background, owned by
// the server (Shutdown waits for it).
func (srv *Server) dropScriptUsers() {
	snap := srv.policy.Load()
	srv.mu.Lock()
	gone := map[string][]string{} // by node
	var conns []*upConn
	for key := range srv.scriptUsers {
		if _, ok := snap.Tenant(key.tenant); !ok {
			gone[key.node] = append(gone[key.node], key.tenant)
			delete(srv.scriptUsers, key)
			srv.scripts.flush(key.tenant)
			conns = append(conns, srv.tenantScriptConnsLocked(key.tenant)...)
		}
	}
	if len(gone) > 0 {
		srv.readers.Add(1)
	}
	srv.mu.Unlock()
	for _, u := range conns {
		u.close()
	}
	if len(gone) == 0 {
		return
	}
	go func() {
		defer srv.readers.Done()
		for node, tenants := range gone {
			args := [][]byte{[]byte("ACL"), []byte("DELUSER")}
			for _, t := range tenants {
				args = append(args, []byte(scriptUserName(t)))
			}
			ctx, cancel := context.WithTimeout(context.Background(), srv.cfg.ConnectTimeout)
			err := srv.adminCommandOn(ctx, node, args)
			cancel()
			if err != nil {
				srv.log.Error("redis script users of removed tenants not deleted", "tenants", tenants, "node", node, "error", err)
				continue
			}
			srv.log.Info("redis script users of removed tenants deleted", "tenants", tenants, "node", node)
		}
	}()
}

// scriptSHA is the SHA1 of a script.
func scriptSHA(body []byte) [20]byte { return sha1.Sum(body) }

// prepareScript finishes a script command the rules accepted: it records
// or looks up the tenant's SHA1s and fills the plan. args is the client's
// command, out the rules' rewrite (not modified). It returns the
// arguments to send, or a refusal.
func (s *clientConn) prepareScript(args, out [][]byte, p *plan) ([][]byte, *refusal) {
	if s.inMulti {
		return nil, &refusal{msg: "NOPERM tenantguard: scripts inside MULTI are not supported: they run on the tenant's script connection (rule " + rules.RuleScriptInMulti + ")",
			rule: rules.RuleScriptInMulti, noperm: true}
	}
	if s.pubsub && !s.resp3 {
		// Redis answers so on a RESP2 connection in subscribed state; the
		// script connection is not in it.
		return nil, &refusal{msg: "ERR Can't execute '" + strings.ToLower(string(args[0])) +
			"': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", rule: "invalid"}
	}
	p.script = true
	switch p.reply {
	case rules.ReplyScript:
		s.be.scripts.remember(s.tenantID, scriptSHA(args[1]), scriptSHA(out[1]))
	case rules.ReplyScriptLoad:
		sha := scriptSHA(args[2])
		s.be.scripts.remember(s.tenantID, sha, scriptSHA(out[2]))
		p.sha = sha
	case rules.ReplyScriptSha:
		up, ok := s.be.scripts.lookup(s.tenantID, args[1])
		if !ok {
			return nil, &refusal{msg: noScript, rule: "noscript"}
		}
		s.scriptArgs = append(s.scriptArgs[:0], out...)
		s.shaHex = hex.AppendEncode(s.shaHex[:0], up[:])
		s.scriptArgs[1] = s.shaHex
		return s.scriptArgs, nil
	}
	return out, nil
}

// scriptExists answers SCRIPT EXISTS from the tenant's scripts.
func (s *clientConn) scriptExists(args [][]byte) {
	b := resp.AppendArrayHeader(nil, len(args)-2)
	for _, sha := range args[2:] {
		_, ok := s.be.scripts.lookup(s.tenantID, sha)
		n := int64(0)
		if ok {
			n = 1
		}
		b = resp.AppendInt(b, n)
	}
	s.writeLocal(b)
}

// scriptLoaded rewrites SCRIPT LOAD's reply: the SHA1 the client knows
// the script by, in place of the tenant's form's; a failed load is
// forgotten.
func (s *clientConn) scriptLoaded(dst []byte, rep *resp.Reply, sl slot) []byte {
	if t := rep.Root().Type(); t == resp.TypeSimpleError || t == resp.TypeBlobError {
		s.be.scripts.forget(s.tenantID, sl.plan.sha)
		return append(dst, rep.Raw()...)
	}
	var h [40]byte
	hex.Encode(h[:], sl.plan.sha[:])
	return resp.AppendBulk(dst, h[:])
}
