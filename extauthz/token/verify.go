package token

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// DefaultClockSkew is how far in the future a token's issued-at may be
// before Verify refuses it as not yet valid: clocks of the issuer and the
// verifiers may differ a little. Expiry gets no such allowance.
const DefaultClockSkew = 30 * time.Second

// Verifier verifies tokens against a set of verification keys, looked up by
// the key id a token carries. Holding several keys lets keys rotate: tokens
// signed by an old key keep verifying until that key is removed.
//
// The zero Verifier holds no keys and allows no clock skew; NewVerifier
// returns one with DefaultClockSkew. A Verifier is safe for concurrent use; AddKey and RemoveKey take effect
// for every Verify that starts after they return. Verify takes no lock.
type Verifier struct {
	mu   sync.Mutex                                  // serializes writers
	keys atomic.Pointer[map[string]*VerificationKey] // copy-on-write
	skew atomic.Int64                                // time.Duration
}

// NewVerifier returns a Verifier holding keys, with DefaultClockSkew. It
// fails, wrapping ErrInvalidKey, if two keys share an id.
func NewVerifier(keys ...*VerificationKey) (*Verifier, error) {
	v := &Verifier{}
	v.skew.Store(int64(DefaultClockSkew))
	for _, k := range keys {
		if err := v.AddKey(k); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// SetClockSkew sets how far in the future an issued-at may be (negative
// values count as zero). It does not extend expiry.
func (v *Verifier) SetClockSkew(d time.Duration) { v.skew.Store(int64(max(d, 0))) }

// AddKey adds k. Adding a key that is already present is a no-op; adding a
// different key under an id in use fails, wrapping ErrInvalidKey, since
// silently replacing it would turn valid tokens into forgeries or back.
func (v *Verifier) AddKey(k *VerificationKey) error {
	if k == nil {
		return fmt.Errorf("%w: nil key", ErrInvalidKey)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.load()
	if cur, ok := old[k.id]; ok {
		if cur.Equal(k) {
			return nil
		}
		return fmt.Errorf("%w: key id %q is in use by a different key", ErrInvalidKey, k.id)
	}
	m := make(map[string]*VerificationKey, len(old)+1)
	for id, key := range old {
		m[id] = key
	}
	m[k.id] = k
	v.keys.Store(&m)
	return nil
}

// RemoveKey removes the key with the given id, so tokens it signed fail
// with ErrUnknownKey, and reports whether it was present.
func (v *Verifier) RemoveKey(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.load()
	if _, ok := old[id]; !ok {
		return false
	}
	m := make(map[string]*VerificationKey, len(old))
	for kid, key := range old {
		if kid != id {
			m[kid] = key
		}
	}
	v.keys.Store(&m)
	return true
}

// load returns the current key map; nil (which reads as empty) for the
// zero Verifier.
func (v *Verifier) load() map[string]*VerificationKey {
	if m := v.keys.Load(); m != nil {
		return *m
	}
	return nil
}

// HasKey reports whether a key with the given id is held; a cache of
// verified tokens asks it so that removing a key retires its cached tokens
// too.
func (v *Verifier) HasKey(id string) bool {
	_, ok := v.load()[id]
	return ok
}

// KeyIDs returns the ids of the keys held, sorted.
func (v *Verifier) KeyIDs() []string {
	m := v.load()
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Verify checks token at time now and returns its claims, KeyID included.
// It checks, in order: length (at most MaxTokenLen) and framing, canonical
// base64, version and algorithm, the payload layout and field syntax, the
// key id, both signatures, and last the validity window, so ErrExpired and
// ErrNotYetValid are only ever reported for authentic tokens. A token is
// valid from IssuedAt-skew until just before ExpiresAt. Every error wraps
// one of ErrMalformed, ErrUnsupportedVersion, ErrUnknownKey,
// ErrBadSignature, ErrExpired or ErrNotYetValid.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	b := scratches.Get().(*scratch)
	defer scratches.Put(b)
	msg, sig, c, err := parse(token, b)
	if err != nil {
		return Claims{}, err
	}
	k := v.load()[c.KeyID]
	if k == nil {
		return Claims{}, fmt.Errorf("%w: %q", ErrUnknownKey, c.KeyID)
	}
	c.KeyID = k.id // the key's own string: the payload's copy need not be kept
	if !k.verify(msg, sig) {
		return Claims{}, ErrBadSignature
	}
	if c.IssuedAt.After(now.Add(time.Duration(v.skew.Load()))) {
		return Claims{}, fmt.Errorf("%w: issued at %d, now %d", ErrNotYetValid, c.IssuedAt.Unix(), now.Unix())
	}
	if !now.Before(c.ExpiresAt) {
		return Claims{}, fmt.Errorf("%w: expired at %d, now %d", ErrExpired, c.ExpiresAt.Unix(), now.Unix())
	}
	return c, nil
}

// scratch holds a token's decoded message and signatures while it is
// verified, so that Verify does not allocate 4 KB per token.
type scratch struct {
	msg [len(domain) + maxPayloadLen]byte
	sig [sigLen]byte
}

var scratches = sync.Pool{New: func() any {
	b := new(scratch)
	copy(b.msg[:], domain)
	return b
}}

// parse decodes token into b without checking signatures or time. It
// returns the signed message (domain || payload) and the signature bytes,
// both in b, and the claims (KeyID as written in the payload).
func parse(token string, b *scratch) (msg, sig []byte, c Claims, err error) {
	malformed := func(format string, a ...any) ([]byte, []byte, Claims, error) {
		return nil, nil, Claims{}, fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
	}
	if len(token) > MaxTokenLen {
		return malformed("%d bytes, at most %d allowed", len(token), MaxTokenLen)
	}
	if !strings.HasPrefix(token, Prefix) {
		if otherVersion(token) {
			return nil, nil, Claims{}, fmt.Errorf("%w: prefix %q", ErrUnsupportedVersion, token[:strings.IndexByte(token, '.')+1])
		}
		return malformed("no %q prefix", Prefix)
	}
	p64, s64, ok := strings.Cut(token[len(Prefix):], ".")
	switch {
	case !ok:
		return malformed("no signature part")
	case len(p64) < minPayloadB64 || len(p64) > maxPayloadB64:
		return malformed("payload part of %d characters", len(p64))
	case len(s64) != sigB64:
		return malformed("signature part of %d characters, want %d", len(s64), sigB64)
	case hasNewline(p64) || hasNewline(s64):
		// The decoder would skip them; every other character outside the
		// base64url alphabet ('=', '.', '+', ...) it refuses itself.
		return malformed("character outside the base64url alphabet")
	}
	n, err := b64.Decode(b.msg[len(domain):], bytesOf(p64))
	if err != nil {
		return malformed("payload: not canonical base64url")
	}
	msg = b.msg[:len(domain)+n]
	if n, err := b64.Decode(b.sig[:], bytesOf(s64)); err != nil || n != sigLen {
		return malformed("signature: not canonical base64url")
	}
	c, err = decodePayload(msg[len(domain):])
	if err != nil {
		return nil, nil, Claims{}, err
	}
	return msg, b.sig[:], c, nil
}

// hasNewline reports whether s holds CR or LF (IndexByte is vectorised).
func hasNewline(s string) bool {
	return strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0
}

// bytesOf views s as bytes without copying; the decoder only reads them.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// decodePayload parses the binary payload and checks every field.
func decodePayload(p []byte) (Claims, error) {
	if p[0] != version1 || p[1] != algHybrid { // len(p) >= minPayloadLen
		return Claims{}, fmt.Errorf("%w: version %d, algorithm %d", ErrUnsupportedVersion, p[0], p[1])
	}
	var c Claims
	copy(c.SessionID[:], p[2:18])
	iat := int64(binary.BigEndian.Uint64(p[18:26])) // values >= 2^63 turn negative
	exp := int64(binary.BigEndian.Uint64(p[26:34])) // and are refused below
	rest := p[fixedLen:]
	var fields [3]string
	for i := range fields {
		if len(rest) == 0 || 1+int(rest[0]) > len(rest) {
			return Claims{}, fmt.Errorf("%w: truncated payload", ErrMalformed)
		}
		end := 1 + int(rest[0]) // int: 1+byte(255) would wrap to 0
		fields[i], rest = string(rest[1:end]), rest[end:]
	}
	if len(rest) != 0 {
		return Claims{}, fmt.Errorf("%w: %d bytes after the payload", ErrMalformed, len(rest))
	}
	c.KeyID, c.TenantID, c.UserID = fields[0], fields[1], fields[2]
	if !validKeyID(c.KeyID) {
		return Claims{}, fmt.Errorf("%w: bad key id", ErrMalformed)
	}
	if msg := checkFields(c.SessionID, iat, exp, c.TenantID, c.UserID); msg != "" {
		return Claims{}, fmt.Errorf("%w: %s", ErrMalformed, msg)
	}
	c.IssuedAt, c.ExpiresAt = time.Unix(iat, 0), time.Unix(exp, 0)
	return c, nil
}

// otherVersion reports whether s starts like a token of another version,
// "tg<digits>.", so it gets ErrUnsupportedVersion instead of ErrMalformed.
func otherVersion(s string) bool {
	digits, _, ok := strings.Cut(strings.TrimPrefix(s, "tg"), ".")
	if !ok || !strings.HasPrefix(s, "tg") || len(digits) == 0 || len(digits) > 4 {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}
