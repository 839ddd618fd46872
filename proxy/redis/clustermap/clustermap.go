// Package clustermap holds what the Redis sidecar knows of a Redis Cluster's
// topology: which master serves each of the 16384 hash slots, read from
// CLUSTER SHARDS (Redis 7) or CLUSTER SLOTS (older servers), the slot of a
// key (CRC16 with hash tags, as redis-server's keyHashSlot), and the
// MOVED/ASK redirections a node answers with when a slot is elsewhere.
//
// Every reply parsed here comes from an upstream and is treated as hostile:
// malformed or partial topology is an error, never a panic, and a map is
// only built when every slot range and node in it is well-formed.
package clustermap

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// Slots is the number of hash slots of a Redis Cluster.
const Slots = 16384

// noNode marks a slot no master serves in a Map.
const noNode = 0xFFFF

// maxNodes bounds the masters a map holds (redis-server's own advice is
// at most ~1000 nodes).
const maxNodes = 4096

// Map is an immutable slot map: the master serving each slot.
type Map struct {
	owner   [Slots]uint16 // index into masters, or noNode
	masters []string      // host:port of each master, distinct
}

// ErrTopology is wrapped by every error about a malformed topology reply.
var ErrTopology = errors.New("cluster topology")

func topoErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrTopology, fmt.Sprintf(format, a...))
}

func newMap() *Map {
	m := &Map{}
	for i := range m.owner {
		m.owner[i] = noNode
	}
	return m
}

// Master returns the address of the master serving slot, or false if the
// map has none for it.
func (m *Map) Master(slot uint16) (string, bool) {
	if int(slot) >= Slots || m.owner[slot] == noNode {
		return "", false
	}
	return m.masters[m.owner[slot]], true
}

// Masters returns the masters' addresses, each once, in the order the
// topology reply named them.
func (m *Map) Masters() []string { return append([]string(nil), m.masters...) }

// Covered reports the number of slots some master serves.
func (m *Map) Covered() int {
	n := 0
	for _, o := range m.owner {
		if o != noNode {
			n++
		}
	}
	return n
}

// assign gives slots [lo, hi] to addr.
func (m *Map) assign(lo, hi int64, addr string) error {
	if lo < 0 || hi >= Slots || lo > hi {
		return topoErr("slot range %d-%d is out of 0-%d", lo, hi, Slots-1)
	}
	idx := -1
	for i, a := range m.masters {
		if a == addr {
			idx = i
			break
		}
	}
	if idx < 0 {
		if len(m.masters) >= maxNodes {
			return topoErr("more than %d masters", maxNodes)
		}
		idx = len(m.masters)
		m.masters = append(m.masters, addr)
	}
	for s := lo; s <= hi; s++ {
		m.owner[s] = uint16(idx)
	}
	return nil
}

// nodeAddr joins a node's host and port. A host of "" or "?" (a node that
// does not know its own address, as CLUSTER SHARDS' endpoint may say) is
// taken to be fallbackHost, the host the reply came from.
func nodeAddr(host []byte, port int64, fallbackHost string) (string, error) {
	if port <= 0 || port > 65535 {
		return "", topoErr("port %d", port)
	}
	h := string(host)
	if h == "" || h == "?" {
		h = fallbackHost
	}
	if h == "" || len(h) > 255 {
		return "", topoErr("node without an address")
	}
	return net.JoinHostPort(h, strconv.FormatInt(port, 10)), nil
}

// ParseShards builds a map from a CLUSTER SHARDS reply (RESP2 arrays of
// key/value pairs, or RESP3 maps): for each shard, its "slots" (a flat
// list of start, end pairs) go to the node whose "role" is "master".
// Nodes are addressed by "endpoint" (else "ip") and "port" (else
// "tls-port"); fallbackHost replaces an unknown endpoint ("?").
func ParseShards(v resp.Value, fallbackHost string) (*Map, error) {
	return parseShards(v, fallbackHost, "port", "tls-port")
}

// ParseShardsTLS is ParseShards for a client that speaks TLS to the
// nodes: "tls-port" first, else "port" (a node of a cluster with
// tls-cluster yes may announce both).
func ParseShardsTLS(v resp.Value, fallbackHost string) (*Map, error) {
	return parseShards(v, fallbackHost, "tls-port", "port")
}

func parseShards(v resp.Value, fallbackHost, port, otherPort string) (*Map, error) {
	if !isList(v) {
		return nil, topoErr("CLUSTER SHARDS reply is a %s, not an array", v.Type())
	}
	m := newMap()
	for i := range v.Len() {
		shard := v.Index(i)
		slots, ok := field(shard, "slots")
		if !ok || !isList(slots) || slots.Len()%2 != 0 {
			return nil, topoErr("shard %d: no slots list of start, end pairs", i)
		}
		if slots.Len() == 0 {
			continue // a shard of replicas only, or an empty master
		}
		nodes, ok := field(shard, "nodes")
		if !ok || !isList(nodes) {
			return nil, topoErr("shard %d: no nodes list", i)
		}
		// The master; an online one first (a failed master may still be
		// listed as one next to the replica that took over).
		addr, online := "", false
		for j := range nodes.Len() {
			n := nodes.Index(j)
			if role, ok := field(n, "role"); !ok || string(role.Bytes()) != "master" {
				continue
			}
			a, err := shardNodeAddr(n, fallbackHost, port, otherPort)
			if err != nil {
				return nil, fmt.Errorf("shard %d node %d: %w", i, j, err)
			}
			h, _ := field(n, "health")
			isOnline := h.Valid() && string(h.Bytes()) == "online"
			if addr == "" || isOnline && !online {
				addr, online = a, isOnline
			}
		}
		if addr == "" {
			return nil, topoErr("shard %d serves slots but has no master", i)
		}
		for k := 0; k < slots.Len(); k += 2 {
			lo, ok1 := slots.Index(k).Int()
			hi, ok2 := slots.Index(k + 1).Int()
			if !ok1 || !ok2 {
				return nil, topoErr("shard %d: slot bound is not an integer", i)
			}
			if err := m.assign(lo, hi, addr); err != nil {
				return nil, fmt.Errorf("shard %d: %w", i, err)
			}
		}
	}
	return m, nil
}

func shardNodeAddr(n resp.Value, fallbackHost, port, otherPort string) (string, error) {
	host, ok := field(n, "endpoint")
	if !ok || len(host.Bytes()) == 0 {
		host, ok = field(n, "ip")
	}
	if !ok {
		return "", topoErr("node has neither endpoint nor ip")
	}
	p, ok := field(n, port)
	if !ok {
		p, ok = field(n, otherPort)
	}
	if !ok {
		return "", topoErr("node has no port")
	}
	n64, ok := p.Int()
	if !ok {
		return "", topoErr("node port is not an integer")
	}
	return nodeAddr(host.Bytes(), n64, fallbackHost)
}

// ParseSlots builds a map from a CLUSTER SLOTS reply: each element is
// start, end, then the master as [host, port, id, ...], then replicas.
func ParseSlots(v resp.Value, fallbackHost string) (*Map, error) {
	if !isList(v) {
		return nil, topoErr("CLUSTER SLOTS reply is a %s, not an array", v.Type())
	}
	m := newMap()
	for i := range v.Len() {
		r := v.Index(i)
		if !isList(r) || r.Len() < 3 {
			return nil, topoErr("slot range %d: want start, end and a master", i)
		}
		lo, ok1 := r.Index(0).Int()
		hi, ok2 := r.Index(1).Int()
		if !ok1 || !ok2 {
			return nil, topoErr("slot range %d: bound is not an integer", i)
		}
		master := r.Index(2)
		if !isList(master) || master.Len() < 2 {
			return nil, topoErr("slot range %d: master is not [host, port, ...]", i)
		}
		port, ok := master.Index(1).Int()
		if !ok {
			return nil, topoErr("slot range %d: port is not an integer", i)
		}
		addr, err := nodeAddr(master.Index(0).Bytes(), port, fallbackHost)
		if err != nil {
			return nil, fmt.Errorf("slot range %d: %w", i, err)
		}
		if err := m.assign(lo, hi, addr); err != nil {
			return nil, fmt.Errorf("slot range %d: %w", i, err)
		}
	}
	return m, nil
}

func isList(v resp.Value) bool {
	switch v.Type() {
	case resp.TypeArray, resp.TypeMap, resp.TypeSet:
		return !v.IsNull()
	}
	return false
}

// field returns the value of name in a list of key/value pairs (a RESP2
// array or a RESP3 map).
func field(v resp.Value, name string) (resp.Value, bool) {
	if !isList(v) {
		return resp.Value{}, false
	}
	for k := 0; k+1 < v.Len(); k += 2 {
		key := v.Index(k)
		if !key.IsAggregate() && string(key.Bytes()) == name {
			return v.Index(k + 1), true
		}
	}
	return resp.Value{}, false
}

// Redirect is a MOVED or ASK error of a cluster node.
type Redirect struct {
	Ask  bool   // ASK: this one command goes to Addr, preceded by ASKING
	Slot uint16 // the slot of the command's keys
	Addr string // host:port of the node to ask
}

// ParseRedirect parses the message of an error reply ("MOVED 3999
// 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381", without the '-'); ok is
// false for any other error. A node that does not know its peer's
// address sends ":6381": the host is then fallbackHost.
func ParseRedirect(msg []byte, fallbackHost string) (Redirect, bool) {
	var r Redirect
	switch {
	case len(msg) > 6 && string(msg[:6]) == "MOVED ":
		msg = msg[6:]
	case len(msg) > 4 && string(msg[:4]) == "ASK ":
		r.Ask = true
		msg = msg[4:]
	default:
		return r, false
	}
	sp := -1
	for i, c := range msg {
		if c == ' ' {
			sp = i
			break
		}
	}
	if sp <= 0 || sp > 5 {
		return r, false
	}
	slot, err := strconv.Atoi(string(msg[:sp]))
	if err != nil || slot < 0 || slot >= Slots {
		return r, false
	}
	host, port, err := net.SplitHostPort(string(msg[sp+1:]))
	if err != nil {
		return r, false
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return r, false
	}
	if r.Addr, err = nodeAddr([]byte(host), int64(p), fallbackHost); err != nil {
		return r, false
	}
	r.Slot = uint16(slot)
	return r, true
}
