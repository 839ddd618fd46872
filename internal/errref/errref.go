// Package errref gives upstream failures a reference a client can quote.
// A client is never shown the cause of an upstream failure (it can name the
// upstream's address, port and role); it gets a fixed message carrying a
// short random reference, and the cause is logged under the same
// reference, so an operator can find it from a user's report.
package errref

import (
	"crypto/rand"
	"encoding/hex"
)

// New returns a fresh reference: 8 hexadecimal digits.
func New() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
