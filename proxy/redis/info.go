package redis

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// INFO, answered per tenant.
//
// The server's INFO describes every tenant's keys and clients and the
// server's host, so it is never forwarded. INFO [section ...] is answered
// with these sections, any others being empty:
//
//	server       redis_version, redis_mode (the server's)
//	clients      connected_clients (the tenant's clients at this sidecar),
//	             maxclients (the tenant's connection limit, when it has one)
//	memory       maxmemory_policy (the server's)
//	persistence  loading, async_loading (the server's)
//	keyspace     db0:keys=N,expires=M,avg_ttl=0 for the tenant's keys
//
// "default", "all" and "everything" (and no section) give all five. The
// server's figures come from its own INFO; the tenant's keys are counted
// with SCAN over its namespace and PTTL of each key found (on a Redis
// Cluster, on every master, summed; redis_mode is then "standalone", as
// the listener is one server to its clients), at most
// infoScanLimit keys (past it, keys and expires count the first
// infoScanLimit). Both are kept for infoCacheTTL, so a storm of
// connections (each ioredis connection sends INFO) costs one count per
// tenant and period.

const (
	infoScanLimit = 100_000
	infoCacheTTL  = 2 * time.Second
)

// infoSections are the sections INFO answers, in the order it answers them.
var infoSections = []string{"server", "clients", "memory", "persistence", "keyspace"}

// serverFacts are the server's figures INFO passes on.
type serverFacts struct {
	version, mode, maxmemoryPol string
	loading, asyncLoading       string
}

// infoCache keeps what INFO read last: the server's figures and each
// tenant's key count.
type infoCache struct {
	mu         sync.Mutex
	at         time.Time
	facts      serverFacts
	tenantKeys map[string]keyCount
}

// keyCount is a tenant's key count.
type keyCount struct {
	at            time.Time
	keys, expires int64
}

// emulateInfo answers INFO [section ...].
func (s *clientConn) emulateInfo(ctx context.Context, args [][]byte) error {
	want := map[string]bool{}
	if len(args) == 1 {
		want["default"] = true
	}
	for _, a := range args[1:] {
		want[strings.ToLower(string(a))] = true
	}
	all := want["default"] || want["all"] || want["everything"]
	show := func(sec string) bool { return all || want[sec] }
	needServer := show("server") || show("memory") || show("persistence")
	f, err := s.be.infoFacts(ctx, needServer)
	if err != nil {
		s.writeLocal(s.emulationFailure(err))
		return nil
	}
	var kc keyCount
	if show("keyspace") {
		if kc, err = s.tenantKeyCount(ctx); err != nil {
			s.writeLocal(s.emulationFailure(err))
			return nil
		}
	}
	var b bytes.Buffer
	section := func(title string) {
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + title + "\r\n")
	}
	field := func(k, v string) { b.WriteString(k + ":" + v + "\r\n") }
	for _, sec := range infoSections {
		if !show(sec) {
			continue
		}
		switch sec {
		case "server":
			section("Server")
			field("redis_version", f.version)
			field("redis_mode", f.mode)
		case "clients":
			section("Clients")
			s.srv.mu.Lock()
			n := s.srv.perTenant[s.tenantID]
			s.srv.mu.Unlock()
			field("connected_clients", strconv.Itoa(n))
			if lim := s.tenant.Limits.MaxConnections; lim > 0 {
				field("maxclients", strconv.Itoa(lim))
			}
		case "memory":
			section("Memory")
			field("maxmemory_policy", f.maxmemoryPol)
		case "persistence":
			section("Persistence")
			field("loading", f.loading)
			field("async_loading", f.asyncLoading)
		case "keyspace":
			section("Keyspace")
			if kc.keys > 0 {
				field("db0", "keys="+strconv.FormatInt(kc.keys, 10)+",expires="+strconv.FormatInt(kc.expires, 10)+",avg_ttl=0")
			}
		}
	}
	if s.resp3 {
		s.writeLocal(resp.AppendVerbatim(nil, "txt", b.Bytes()))
	} else {
		s.writeLocal(resp.AppendBulk(nil, b.Bytes()))
	}
	return nil
}

// infoFacts returns the server's figures, read again when older than
// infoCacheTTL (only if need: otherwise what is known, maybe nothing).
func (srv *Server) infoFacts(ctx context.Context, need bool) (serverFacts, error) {
	f := &srv.info
	f.mu.Lock()
	fresh := time.Since(f.at) < infoCacheTTL
	cur := f.facts
	f.mu.Unlock()
	if fresh || !need {
		return cur, nil
	}
	u, err := srv.dialUpstream(ctx, false)
	if err != nil {
		return cur, dialError{err}
	}
	defer u.closeNoReader()
	_ = u.conn.SetDeadline(time.Now().Add(srv.cfg.ConnectTimeout))
	if _, err := u.conn.Write(resp.AppendCommand(nil, [][]byte{[]byte("INFO")})); err != nil {
		return cur, err
	}
	rep, err := u.rr.ReadReply()
	if err != nil {
		return cur, err
	}
	root := rep.Root()
	if t := root.Type(); t != resp.TypeBulkString && t != resp.TypeVerbatim {
		return cur, errString("unexpected INFO reply")
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(root.Bytes()), "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if ok {
			switch k {
			case "redis_version", "redis_mode", "maxmemory_policy", "loading", "async_loading":
				got[k] = v
			}
		}
	}
	orDefault := func(k, def string) string {
		if v := got[k]; v != "" {
			return v
		}
		return def
	}
	mode := orDefault("redis_mode", "standalone")
	if srv.cluster != nil {
		// The listener is one server to its clients (CLUSTER is refused):
		// a client told "cluster" would look for the slot map.
		mode = "standalone"
	}
	cur = serverFacts{
		version: orDefault("redis_version", "7.0.0"), mode: mode,
		maxmemoryPol: orDefault("maxmemory_policy", "noeviction"),
		loading:      orDefault("loading", "0"), asyncLoading: orDefault("async_loading", "0"),
	}
	f.mu.Lock()
	f.at, f.facts = time.Now(), cur
	f.mu.Unlock()
	srv.mu.Lock()
	srv.version = cur.version
	srv.mu.Unlock()
	return cur, nil
}

// tenantKeyCount returns the client's tenant's key count, counted again
// when older than infoCacheTTL; on a cluster, summed over the masters.
func (s *clientConn) tenantKeyCount(ctx context.Context) (keyCount, error) {
	f := &s.be.info
	f.mu.Lock()
	kc, ok := f.tenantKeys[s.tenantID]
	f.mu.Unlock()
	if ok && time.Since(kc.at) < infoCacheTTL {
		return kc, nil
	}
	// Count after the client's earlier commands have run.
	s.waitDrained()
	kc = keyCount{}
	var nodes []string // "" for the one redis-server
	if c := s.be.cluster; c != nil {
		ms, err := c.masters(ctx)
		if err != nil {
			return kc, dialError{err}
		}
		nodes = ms
	} else {
		nodes = []string{""}
	}
	for _, node := range nodes {
		var u *upConn
		var err error
		if node == "" {
			u, err = s.be.dialUpstream(ctx, false)
		} else {
			u, err = s.be.cluster.dial(ctx, node, false)
		}
		if err != nil {
			return kc, dialError{err}
		}
		err = s.countKeysOn(u, &kc)
		u.closeNoReader()
		if err != nil {
			return kc, err
		}
	}
	kc.at = time.Now()
	f.mu.Lock()
	if f.tenantKeys == nil {
		f.tenantKeys = map[string]keyCount{}
	}
	f.tenantKeys[s.tenantID] = kc
	f.mu.Unlock()
	return kc, nil
}

// countKeysOn adds the tenant's keys on u's server (a connection nobody
// else reads) to kc, until kc holds infoScanLimit keys.
func (s *clientConn) countKeysOn(u *upConn, kc *keyCount) error {
	pattern := s.ns.AppendPattern(nil, []byte("*"))
	cursor := []byte("0")
	for kc.keys < infoScanLimit {
		_ = u.conn.SetDeadline(time.Now().Add(s.srv.cfg.ConnectTimeout))
		cmd := resp.AppendCommand(nil, [][]byte{[]byte("SCAN"), cursor, []byte("MATCH"), pattern, []byte("COUNT"), []byte("1000")})
		if _, err := u.conn.Write(cmd); err != nil {
			return err
		}
		rep, err := u.rr.ReadReply()
		if err != nil {
			return err
		}
		root := rep.Root()
		if root.Type() == resp.TypeSimpleError || root.Len() != 2 {
			return errString("unexpected SCAN reply")
		}
		cursor = append([]byte(nil), root.Index(0).Bytes()...)
		keys := root.Index(1)
		var pttl []byte
		for it := keys.Iter(); it.Next(); {
			pttl = resp.AppendCommand(pttl, [][]byte{[]byte("PTTL"), it.Value().Bytes()})
		}
		n := keys.Len()
		kc.keys += int64(n)
		if n > 0 {
			if _, err := u.conn.Write(pttl); err != nil {
				return err
			}
			for range n {
				rep, err := u.rr.ReadReply()
				if err != nil {
					return err
				}
				if ms, ok := rep.Root().Int(); ok && ms >= 0 {
					kc.expires++
				}
			}
		}
		if string(cursor) == "0" {
			break
		}
	}
	return nil
}
