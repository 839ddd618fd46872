package redis

import (
	"context"
	"errors"
	"strings"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// clientCommand answers the CLIENT subcommands that describe the client
// itself, per tenant. It reports false for those it leaves to the rules.
func (s *clientConn) clientCommand(args [][]byte) bool {
	if len(args) < 2 {
		return false
	}
	switch strings.ToLower(string(args[1])) {
	case "setname":
		if len(args) != 3 {
			return false
		}
		s.name = append(s.name[:0], args[2]...)
		s.writeLocal(resp.AppendSimple(nil, "OK"))
	case "getname":
		if s.name == nil {
			s.writeLocal(resp.AppendNull(nil, s.resp3))
		} else {
			s.writeLocal(resp.AppendBulk(nil, s.name))
		}
	case "id":
		s.writeLocal(resp.AppendInt(nil, s.id))
	case "info":
		info := "id=" + string(itoa(s.id)) + " name=" + string(s.name) + " user=" + s.tenant.ID + " resp=" + map[bool]string{true: "3", false: "2"}[s.resp3] + "\n"
		s.writeLocal(resp.AppendBulkString(nil, info))
	case "setinfo":
		s.writeLocal(resp.AppendSimple(nil, "OK"))
	default:
		return false
	}
	return true
}

// reset answers RESET: back to a fresh authenticated connection of the same
// tenant. A dedicated upstream connection goes back to the pool, reset
// (pool.go), or is closed.
func (s *clientConn) reset(ctx context.Context) error {
	s.waitDrained()
	if s.dedicated {
		s.be.releaseDedicated(s.up)
		s.up, s.dedicated = nil, false
	}
	s.queued, s.subs, s.name, s.resp3, s.via, s.track, s.watching, s.heldMulti = nil, nil, nil, false, nil, tracking{}, false, nil
	s.qmu.Lock()
	s.inMulti, s.pubsub = false, false
	s.qmu.Unlock()
	s.writeLocal(resp.AppendSimple(nil, "RESET"))
	return nil
}

// emulateFlush deletes the tenant's keys: SCAN MATCH <prefix>* and UNLINK,
// on a connection of its own, after everything the client sent before.
func (s *clientConn) emulateFlush(ctx context.Context, args [][]byte) error {
	_, err := s.scanTenant(ctx, true)
	// Whatever was unlinked, the client's next read does not hit it.
	s.be.near.flushTenant(s.cache)
	if err != nil {
		s.writeLocal(s.emulationFailure(err))
		return nil
	}
	s.writeLocal(resp.AppendSimple(nil, "OK"))
	return nil
}

// emulateDBSize counts the tenant's keys.
func (s *clientConn) emulateDBSize(ctx context.Context) error {
	n, err := s.scanTenant(ctx, false)
	if err != nil {
		s.writeLocal(s.emulationFailure(err))
		return nil
	}
	s.writeLocal(resp.AppendInt(nil, n))
	return nil
}

// scanTenant walks the tenant's keys with SCAN, unlinking them if asked,
// and returns how many it saw.
func (s *clientConn) scanTenant(ctx context.Context, unlink bool) (int64, error) {
	if s.up != nil {
		if err := s.up.flush(); err != nil {
			return 0, err
		}
	}
	s.waitDrained()
	if s.be.cluster != nil {
		return s.clusterScanTenant(ctx, unlink)
	}
	u, err := s.be.dialUpstream(ctx, false)
	if err != nil {
		return 0, dialError{err}
	}
	defer u.closeNoReader()
	return s.scanTenantOn(u, unlink)
}

// scanTenantOn is scanTenant on one server. On a cluster node it unlinks
// one key per command: in spread mode the keys of a batch may live in
// different slots (CROSSSLOT).
func (s *clientConn) scanTenantOn(u *upConn, unlink bool) (int64, error) {
	pattern := s.ns.AppendPattern(nil, []byte("*"))
	cursor := []byte("0")
	var total int64
	for {
		cmd := resp.AppendCommand(nil, [][]byte{[]byte("SCAN"), cursor, []byte("MATCH"), pattern, []byte("COUNT"), []byte("1000")})
		if _, err := u.conn.Write(cmd); err != nil {
			return total, err
		}
		rep, err := u.rr.ReadReply()
		if err != nil {
			return total, err
		}
		root := rep.Root()
		if root.Type() == resp.TypeSimpleError || root.Len() != 2 {
			return total, errString("unexpected SCAN reply")
		}
		cursor = append([]byte(nil), root.Index(0).Bytes()...)
		keys := root.Index(1)
		total += int64(keys.Len())
		if unlink && keys.Len() > 0 {
			var cmds []byte
			n := 1
			if s.be.cluster != nil {
				for it := keys.Iter(); it.Next(); {
					cmds = resp.AppendCommand(cmds, [][]byte{[]byte("UNLINK"), it.Value().Bytes()})
				}
				n = keys.Len()
			} else {
				del := [][]byte{[]byte("UNLINK")}
				for it := keys.Iter(); it.Next(); {
					del = append(del, it.Value().Bytes())
				}
				cmds = resp.AppendCommand(nil, del)
			}
			if _, err := u.conn.Write(cmds); err != nil {
				return total, err
			}
			for range n {
				if _, err := u.rr.ReadReply(); err != nil {
					return total, err
				}
			}
		}
		if string(cursor) == "0" {
			return total, nil
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// dialError is a scanTenant that could not connect: nothing was done.
type dialError struct{ error }

func (e dialError) Unwrap() error { return e.error }

// emulationFailure answers an emulated command that failed upstream.
func (s *clientConn) emulationFailure(err error) []byte {
	if de := (dialError{}); errors.As(err, &de) {
		return s.dialFailure(de.error)
	}
	return s.upstreamFailure(msgEmulationFailed, err)
}
