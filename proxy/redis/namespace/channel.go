package namespace

const (
	keyspacePrefix = "__keyspace@"
	keyeventPrefix = "__keyevent@"
)

// IsNotificationChannel reports whether ch (a channel or a pattern) names
// keyspace notifications: it begins with "__keyspace@" or "__keyevent@".
func IsNotificationChannel(ch []byte) bool {
	return hasPrefix(ch, keyspacePrefix) || hasPrefix(ch, keyeventPrefix)
}

// AppendChannel appends the tenant's form of a channel name or channel
// pattern (SUBSCRIBE, PUBLISH, PSUBSCRIBE, PUBSUB CHANNELS...) to dst:
//
//   - a keyspace notification name "__keyspace@<db>__:<key>" becomes
//     "__keyspace@<db>__:" + the tenant's key prefix + <key>, <key> being a
//     key or a key pattern (see AppendNotificationChannel);
//   - any other "__keyspace@" or "__keyevent@" name cannot be scoped and
//     gives ok == false, leaving dst as it was: the caller must refuse it;
//   - any other name gets the tenant's channel prefix.
//
// Since no prefix holds a glob metacharacter the result is right for
// literal names and patterns alike: a scoped pattern only matches scoped
// names of the same tenant. Bound patterns with CheckPattern first.
func (ns *Namespace) AppendChannel(dst, ch []byte) (out []byte, ok bool) {
	if IsNotificationChannel(ch) {
		return ns.AppendNotificationChannel(dst, ch)
	}
	return append(append(dst, ns.channel...), ch...), true
}

// StripChannel returns a channel name from a reply (a message, a subscribe
// confirmation, PUBSUB CHANNELS...) without the tenant's channel prefix; ok
// is false when it does not carry the prefix. The result aliases ch. It
// does not handle notification channels; AppendStripChannel does.
func (ns *Namespace) StripChannel(ch []byte) (stripped []byte, ok bool) {
	return cut(ch, ns.channel)
}

// AppendStripChannel appends to dst the client's form of a channel name or
// pattern from a reply, undoing AppendChannel: a keyspace notification name
// loses the key prefix after its "__keyspace@<db>__:" header, any other
// name loses the channel prefix. ok is false, leaving dst as it was, when
// the name is not in the tenant's namespace; the caller must then drop it.
func (ns *Namespace) AppendStripChannel(dst, ch []byte) (out []byte, ok bool) {
	if n := keyspaceHeader(ch); n > 0 {
		key, ok := ns.StripKey(ch[n:])
		if !ok {
			return dst, false
		}
		return append(append(dst, ch[:n]...), key...), true
	}
	if IsNotificationChannel(ch) {
		return dst, false
	}
	name, ok := ns.StripChannel(ch)
	if !ok {
		return dst, false
	}
	return append(dst, name...), true
}

// AppendNotificationChannel appends to dst the tenant's form of a keyspace
// notification channel or pattern "__keyspace@<db>__:<key>", where <db> is
// decimal digits: the same header followed by the tenant's key prefix and
// <key> (a literal key or, for PSUBSCRIBE, a key pattern). The tenant then
// hears of its own keys only. Keyevent channels ("__keyevent@<db>__:<event>")
// carry the key in the payload, so they are refused like anything else that
// is not such a keyspace name: ok is false and dst is returned as it was.
func (ns *Namespace) AppendNotificationChannel(dst, ch []byte) (out []byte, ok bool) {
	n := keyspaceHeader(ch)
	if n == 0 {
		return dst, false
	}
	dst = append(dst, ch[:n]...)
	return append(append(dst, ns.pattern...), ch[n:]...), true
}

// ScopeNotificationChannel is AppendNotificationChannel into a new slice.
func (ns *Namespace) ScopeNotificationChannel(ch []byte) (rewritten []byte, ok bool) {
	return ns.AppendNotificationChannel(nil, ch)
}

// keyspaceHeader returns the length of ch's "__keyspace@<db>__:" header,
// <db> being one or more decimal digits, or 0 when ch has none.
func keyspaceHeader(ch []byte) int {
	if !hasPrefix(ch, keyspacePrefix) {
		return 0
	}
	i := len(keyspacePrefix)
	j := i
	for j < len(ch) && '0' <= ch[j] && ch[j] <= '9' {
		j++
	}
	if j == i || !hasPrefix(ch[j:], "__:") {
		return 0
	}
	return j + len("__:")
}

func hasPrefix(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}
