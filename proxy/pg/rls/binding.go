// Package rls installs and audits row-level security for tenant-scoped
// tables, and signs the tenant binding the sidecar sets on upstream
// connections.
//
// The binding. Every upstream connection carries the setting
// tenantguard.binding = "<tenant>.<unix seconds>.<hex HMAC-SHA256>", signed
// with a key that only the sidecar and a table the upstream role cannot read
// hold. Row-level security policies compare the tenant column with
// tenantguard.current_tenant(), a SECURITY DEFINER function (owned by the
// bootstrapping administrator, not replaceable by the upstream role) that
// returns the tenant only if the signature verifies and is younger than the
// configured maximum age. So a statement that slipped past the firewall and
// set the binding to "globex" gets NULL, and NULL matches no row: fail
// closed. Cost: two SHA-256 over a few dozen bytes per statement (the policy
// calls the function once per statement, as an InitPlan), and no extra round
// trip: the binding is set, session-wide, pipelined ahead of a transaction
// only when the connection last served another tenant or the binding is
// older than half its maximum age.
package rls

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"
)

// Setting is the custom setting that carries the binding.
const Setting = "tenantguard.binding"

// Schema holds the binding function and its key.
const Schema = "tenantguard"

// Binder signs tenant bindings.
type Binder struct {
	key    []byte
	maxAge time.Duration
}

// NewBinder returns a Binder for key (16 to 64 bytes) whose bindings are
// valid for maxAge.
func NewBinder(key []byte, maxAge time.Duration) (*Binder, error) {
	if len(key) < 16 || len(key) > 64 {
		return nil, errors.New("binding key must be 16 to 64 bytes")
	}
	if maxAge <= 0 {
		maxAge = time.Hour
	}
	return &Binder{key: append([]byte(nil), key...), maxAge: maxAge}, nil
}

// MaxAge is how long a binding stays valid.
func (b *Binder) MaxAge() time.Duration { return b.maxAge }

// Sign returns the binding value for tenant, issued at now.
func (b *Binder) Sign(tenant string, now time.Time) string {
	msg := tenant + "." + strconv.FormatInt(now.Unix(), 10)
	m := hmac.New(sha256.New, b.key)
	m.Write([]byte(msg))
	return msg + "." + hex.EncodeToString(m.Sum(nil))
}

// pads returns HMAC's inner and outer padded keys, which the database needs
// to compute the same HMAC with sha256() alone.
func (b *Binder) pads() (ipad, opad []byte) {
	k := make([]byte, sha256.BlockSize)
	copy(k, b.key)
	ipad = make([]byte, len(k))
	opad = make([]byte, len(k))
	for i, c := range k {
		ipad[i] = c ^ 0x36
		opad[i] = c ^ 0x5c
	}
	return ipad, opad
}
