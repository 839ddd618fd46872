package redis

import (
	"context"
	"strings"

	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// Client-side caching (CLIENT TRACKING).
//
// A client that turns tracking on gets it on its own upstream connection,
// in broadcasting mode (BCAST) with the tenant's names as prefixes: the
// tenant's key prefix, or the tenant's form of each PREFIX the client
// gave. So redis-server sends that connection invalidations for the
// tenant's keys only, whatever mode the client asked for: a client in the
// default mode (tracking the keys it read) or OPTIN/OPTOUT hears of more
// of its tenant's keys than it read, which a cache takes as a spurious
// eviction, never of another tenant's. Invalidation messages have the
// namespace taken off each key on the way back (a key outside it, which
// cannot come, would be dropped).
//
// Tracking needs RESP3 here: the invalidations come on the client's own
// connection as push messages. RESP2 tracking needs REDIRECT to another
// connection, and client ids at the sidecar are not the server's, so it
// is refused. CLIENT CACHING, GETREDIR and TRACKINGINFO are answered from
// the tracking the client asked for.

// tracking is the CLIENT TRACKING state a client asked for.
type tracking struct {
	on, bcast, optin, optout, noloop bool
	prefixes                         [][]byte // as the client named them
	caching                          string   // "yes" or "no" after CLIENT CACHING, until the next command
}

// trackingError answers with a Redis error text.
func (s *clientConn) trackingError(msg string) (string, error) {
	s.writeLocal(resp.AppendError(nil, msg))
	return "", nil
}

// parseTracking reads CLIENT TRACKING on|off [REDIRECT id] [PREFIX p]...
// [BCAST] [OPTIN] [OPTOUT] [NOLOOP] as redis-server's clientCommand does:
// the tracking asked for (prefixes copied), whether REDIRECT was given,
// or Redis' error reply text.
func parseTracking(args [][]byte) (t tracking, redirect bool, errMsg string) {
	if len(args) < 3 {
		return t, false, "ERR wrong number of arguments for 'client|tracking' command"
	}
	switch strings.ToLower(string(args[2])) {
	case "on":
		t.on = true
	case "off":
	default:
		return t, false, "ERR syntax error"
	}
	for i := 3; i < len(args); i++ {
		more := i+1 < len(args)
		switch strings.ToLower(string(args[i])) {
		case "redirect":
			if !more {
				return t, false, "ERR syntax error"
			}
			redirect = true
			i++
		case "bcast":
			t.bcast = true
		case "optin":
			t.optin = true
		case "optout":
			t.optout = true
		case "noloop":
			t.noloop = true
		case "prefix":
			if !more {
				return t, false, "ERR syntax error"
			}
			i++
			t.prefixes = append(t.prefixes, append([]byte(nil), args[i]...))
		default:
			return t, false, "ERR syntax error"
		}
	}
	return t, redirect, ""
}

// clientTracking serves CLIENT TRACKING, checking the options as
// redis-server's clientCommand does. It returns the rule that refused it,
// if one did.
func (s *clientConn) clientTracking(ctx context.Context, args [][]byte) (string, error) {
	t, redirect, msg := parseTracking(args)
	if msg != "" {
		return s.trackingError(msg)
	}
	on := t.on
	if !on {
		if !s.track.on {
			s.writeLocal(resp.AppendSimple(nil, "OK"))
			return "", nil
		}
		s.track = tracking{}
		return "", s.forward(ctx, resp.AppendCommand(nil, [][]byte{[]byte("CLIENT"), []byte("TRACKING"), []byte("OFF")}),
			plan{reply: rules.ReplyPlain, replies: 1, dedicated: true})
	}
	if redirect {
		s.refuse("CLIENT TRACKING REDIRECT", "invalidations go to the tracking connection itself, in RESP3 (HELLO 3)", rules.RuleClientTracking)
		return rules.RuleClientTracking, nil
	}
	if !s.resp3 {
		s.refuse("CLIENT TRACKING in RESP2", "it needs REDIRECT; use RESP3 (HELLO 3)", rules.RuleClientTracking)
		return rules.RuleClientTracking, nil
	}
	switch {
	case !t.bcast && len(t.prefixes) > 0:
		return s.trackingError("ERR PREFIX option requires BCAST mode to be enabled")
	case s.track.on && s.track.bcast != t.bcast:
		return s.trackingError("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.")
	case t.bcast && (t.optin || t.optout):
		return s.trackingError("ERR OPTIN and OPTOUT are not compatible with BCAST")
	case t.optin && t.optout:
		return s.trackingError("ERR You can't use both OPTIN and OPTOUT")
	case s.track.on && (t.optin && s.track.optout || t.optout && s.track.optin):
		return s.trackingError("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.")
	}
	up := [][]byte{[]byte("CLIENT"), []byte("TRACKING"), []byte("ON"), []byte("BCAST")}
	switch {
	case len(t.prefixes) > 0:
		for _, p := range t.prefixes {
			up = append(up, []byte("PREFIX"), s.ns.AppendKey(nil, p))
		}
	case s.track.on:
		// On already, with the tenant's whole namespace or the client's
		// prefixes: nothing to add upstream.
		s.track.noloop = s.track.noloop || t.noloop
		s.writeLocal(resp.AppendSimple(nil, "OK"))
		return "", nil
	default:
		up = append(up, []byte("PREFIX"), []byte(s.ns.KeyPrefix()))
	}
	if t.noloop {
		up = append(up, []byte("NOLOOP"))
	}
	if s.track.on {
		t.prefixes = append(s.track.prefixes, t.prefixes...)
		t.noloop = t.noloop || s.track.noloop
	}
	s.track = t
	return "", s.forward(ctx, resp.AppendCommand(nil, up), plan{reply: rules.ReplyPlain, replies: 1, dedicated: true})
}

// trackingState answers CLIENT CACHING, GETREDIR and TRACKINGINFO.
func (s *clientConn) trackingState(args [][]byte) {
	switch strings.ToLower(string(args[1])) {
	case "caching":
		if len(args) != 3 {
			s.writeLocal(resp.AppendError(nil, "ERR wrong number of arguments for 'client|caching' command"))
			return
		}
		if !s.track.on || !s.track.optin && !s.track.optout {
			s.writeLocal(resp.AppendError(nil, "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"))
			return
		}
		switch v := strings.ToLower(string(args[2])); {
		case v == "yes" && s.track.optin, v == "no" && s.track.optout:
			s.track.caching = v
		case v == "yes":
			s.writeLocal(resp.AppendError(nil, "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."))
			return
		case v == "no":
			s.writeLocal(resp.AppendError(nil, "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."))
			return
		default:
			s.writeLocal(resp.AppendError(nil, "ERR syntax error"))
			return
		}
		s.writeLocal(resp.AppendSimple(nil, "OK"))
	case "getredir":
		n := int64(-1)
		if s.track.on {
			n = 0
		}
		s.writeLocal(resp.AppendInt(nil, n))
	case "trackinginfo":
		s.writeLocal(s.trackingInfo())
	}
}

// trackingInfo is CLIENT TRACKINGINFO's reply: flags, redirect, prefixes.
func (s *clientConn) trackingInfo() []byte {
	var flags []string
	t := s.track
	if !t.on {
		flags = []string{"off"}
	} else {
		flags = []string{"on"}
		for _, f := range []struct {
			set  bool
			name string
		}{{t.bcast, "bcast"}, {t.optin, "optin"}, {t.optout, "optout"},
			{t.caching == "yes", "caching-yes"}, {t.caching == "no", "caching-no"}, {t.noloop, "noloop"}} {
			if f.set {
				flags = append(flags, f.name)
			}
		}
	}
	var b []byte
	if s.resp3 {
		b = resp.AppendMapHeader(b, 3)
	} else {
		b = resp.AppendArrayHeader(b, 6)
	}
	b = resp.AppendBulkString(b, "flags")
	if s.resp3 {
		b = resp.AppendSetHeader(b, len(flags))
	} else {
		b = resp.AppendArrayHeader(b, len(flags))
	}
	for _, f := range flags {
		b = resp.AppendBulkString(b, f)
	}
	b = resp.AppendBulkString(b, "redirect")
	redir := int64(-1)
	if t.on {
		redir = 0
	}
	b = resp.AppendInt(b, redir)
	b = resp.AppendBulkString(b, "prefixes")
	b = resp.AppendArrayHeader(b, len(t.prefixes))
	for _, p := range t.prefixes {
		b = resp.AppendBulk(b, p)
	}
	return b
}

// isInvalidation reports whether rep is a RESP3 tracking invalidation
// push: ["invalidate", [key, ...]] or ["invalidate", null] (a flush).
func isInvalidation(rep *resp.Reply) bool {
	root := rep.Root()
	return root.Type() == resp.TypePush && root.Len() == 2 && string(root.Index(0).Bytes()) == "invalidate"
}

// appendInvalidation appends an invalidation push with the tenant's
// namespace taken off every key; keys outside it are dropped, and so is a
// message left with none.
func (s *clientConn) appendInvalidation(dst []byte, rep *resp.Reply) []byte {
	keys := rep.Root().Index(1)
	if !keys.IsAggregate() {
		return append(dst, rep.Raw()...) // null: the server was flushed
	}
	var ours [][]byte
	for it := keys.Iter(); it.Next(); {
		if v := it.Value(); !v.IsAggregate() && !v.IsNull() {
			if k, ok := s.ns.StripKey(v.Bytes()); ok {
				ours = append(ours, k)
			}
		}
	}
	if len(ours) == 0 {
		return dst
	}
	dst = resp.AppendPushHeader(dst, 2)
	dst = resp.AppendBulkString(dst, "invalidate")
	dst = resp.AppendArrayHeader(dst, len(ours))
	for _, k := range ours {
		dst = resp.AppendBulk(dst, k)
	}
	return dst
}
