package namespace

import "fmt"

// Mode selects how a tenant's keys are laid out over Redis Cluster slots.
type Mode uint8

const (
	// Spread prefixes keys with "t:<enc>:": a tenant's keys spread over all
	// slots and hash tags in the user's keys keep working.
	Spread Mode = iota
	// OneSlot prefixes keys with "{t:<enc>}:": all of a tenant's keys hash
	// to one slot, and hash tags in the user's keys are ignored by Cluster.
	OneSlot
)

// String returns "spread" or "oneslot".
func (m Mode) String() string {
	switch m {
	case Spread:
		return "spread"
	case OneSlot:
		return "oneslot"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Namespace is one tenant's namespace. It is immutable and safe for
// concurrent use.
type Namespace struct {
	tenant  string
	mode    Mode
	key     string // key prefix
	pattern string // key prefix as a glob pattern matching only itself
	channel string // channel prefix
}

// New returns the namespace of tenantID in the given mode. It fails for an
// empty id, one longer than MaxTenantLen, or an unknown mode.
func New(tenantID string, mode Mode) (*Namespace, error) {
	switch {
	case tenantID == "":
		return nil, ErrEmptyTenant
	case len(tenantID) > MaxTenantLen:
		return nil, ErrTenantTooLong
	case mode != Spread && mode != OneSlot:
		return nil, fmt.Errorf("%w %d", ErrMode, mode)
	}
	enc := string(AppendEncodedTenant(nil, tenantID))
	ns := &Namespace{tenant: tenantID, mode: mode}
	if mode == Spread {
		ns.key, ns.channel = "t:"+enc+":", "c:"+enc+":"
	} else {
		ns.key, ns.channel = "{t:"+enc+"}:", "{c:"+enc+"}:"
	}
	ns.pattern = string(AppendGlobEscaped(nil, []byte(ns.key)))
	if ns.pattern != ns.key || hasGlobMeta(ns.channel) {
		// Unreachable with AppendEncodedTenant; checked because AppendChannel
		// and the notification functions rely on it.
		return nil, fmt.Errorf("namespace: prefix %q has glob metacharacters", ns.key)
	}
	return ns, nil
}

// MustNew is New that panics on error, for ids known to be valid.
func MustNew(tenantID string, mode Mode) *Namespace {
	ns, err := New(tenantID, mode)
	if err != nil {
		panic(err)
	}
	return ns
}

// Tenant returns the tenant id.
func (ns *Namespace) Tenant() string { return ns.tenant }

// Mode returns the namespace's mode.
func (ns *Namespace) Mode() Mode { return ns.mode }

// KeyPrefix returns the prefix of the tenant's keys, e.g. "t:acme:".
func (ns *Namespace) KeyPrefix() string { return ns.key }

// ChannelPrefix returns the prefix of the tenant's channels, e.g. "c:acme:".
func (ns *Namespace) ChannelPrefix() string { return ns.channel }

// AppendKey appends the tenant's name for key to dst.
func (ns *Namespace) AppendKey(dst, key []byte) []byte {
	return append(append(dst, ns.key...), key...)
}

// StripKey returns key without the tenant's prefix; ok is false when key is
// not in the namespace, and the caller must then hide it from the client.
// The result aliases key.
func (ns *Namespace) StripKey(key []byte) (stripped []byte, ok bool) {
	return cut(key, ns.key)
}

// AppendPattern appends the tenant's form of a key pattern (KEYS, SCAN
// MATCH) to dst: the glob-escaped key prefix followed by pattern, which
// matches exactly the tenant's keys whose unprefixed name pattern matches
// (the one exception: Redis's matcher does not match "" against "*", while
// the tenant's form does match the tenant's empty key, as KEYS * does).
// Bound the pattern with CheckPattern first.
func (ns *Namespace) AppendPattern(dst, pattern []byte) []byte {
	return append(append(dst, ns.pattern...), pattern...)
}

// cut returns b without prefix and whether b began with it.
func cut(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return nil, false
	}
	return b[len(prefix):], true
}
