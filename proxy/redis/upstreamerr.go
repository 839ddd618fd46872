package redis

import (
	"encoding/hex"
	"errors"
	"math/rand/v2"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// Upstream failures, as clients see them.
//
// A client never sees why the upstream failed: a dial error names the
// upstream's address, a handshake error its ACL user. It gets one of these
// fixed replies, with Redis' error code first, and a reference; the cause
// goes to the log with the same reference, the tenant and the client id:
//
//	-TRYAGAIN tenantguard: upstream unavailable (ref 7f3a9c21)
//	    no connection could be made (or the breaker is open); the command
//	    did not run
//	-TRYAGAIN tenantguard: upstream connection lost (ref …)
//	    the connection failed before the command was sent; it did not run
//	-ERR tenantguard: upstream connection lost (ref …)
//	    the connection failed with the reply owed: the command may have run
//	-TRYAGAIN tenantguard: too many clients need an upstream connection of their own (ref …)
//	    Config.MaxDedicated stateful clients (MULTI, blocking commands,
//	    pub/sub, RESP3) are connected already
//	-ERR tenantguard: could not rewrite the reply (ref …)
//	    the upstream's reply could not be parsed for the namespace rewrite
//	-ERR tenantguard: emulated command failed upstream (ref …)
//	    FLUSHDB, FLUSHALL, DBSIZE or INFO failed midway (a flush may be
//	    partial)
//	-ERR tenantguard: the tenant's script user could not be set up (ref …)
//	    the script did not run: the tenant's ACL user could not be created
//	    or authenticated (the sidecar's upstream user lacks ACL SETUSER?)
const (
	msgUnavailable     = "TRYAGAIN tenantguard: upstream unavailable"
	msgLostBeforeSend  = "TRYAGAIN tenantguard: upstream connection lost"
	msgLostReplyOwed   = "ERR tenantguard: upstream connection lost"
	msgTooManyStateful = "TRYAGAIN tenantguard: too many clients need an upstream connection of their own"
	msgRewriteFailed   = "ERR tenantguard: could not rewrite the reply"
	msgEmulationFailed = "ERR tenantguard: emulated command failed upstream"
	msgScriptUser      = "ERR tenantguard: the tenant's script user could not be set up"
)

// errScriptUser is scriptConn's failure to set up or authenticate as the
// tenant's script user.
var errScriptUser = errors.New("script user")

// errTooManyStateful is dedicatedConn's refusal at Config.MaxDedicated.
var errTooManyStateful = errors.New("too many stateful clients")

// newRef returns a fresh reference tying a client's error reply to a log line.
func newRef() string {
	var b [4]byte
	v := rand.Uint32()
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return hex.EncodeToString(b[:])
}

// withRef is msg with ref appended, as a client sees it.
func withRef(msg, ref string) string { return msg + " (ref " + ref + ")" }

// upstreamFailure logs cause with the tenant, the client and a new
// reference, and returns msg's reply carrying that reference.
func (s *clientConn) upstreamFailure(msg string, cause error) []byte {
	ref := newRef()
	s.srv.log.Warn("redis upstream failure", "tenant", s.tenantID, "client", s.id, "ref", ref, "reply", msg, "error", cause)
	return resp.AppendError(nil, withRef(msg, ref))
}

// dialFailure is upstreamFailure for a connection that could not be had.
func (s *clientConn) dialFailure(cause error) []byte {
	if errors.Is(cause, errTooManyStateful) {
		return s.upstreamFailure(msgTooManyStateful, cause)
	}
	if errors.Is(cause, errScriptUser) {
		return s.upstreamFailure(msgScriptUser, cause)
	}
	return s.upstreamFailure(msgUnavailable, cause)
}
