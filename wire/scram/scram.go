// Package scram holds SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL
// and the proxies use it: verifiers in PostgreSQL's rolpassword form, and
// the server side of the exchange. It knows nothing of any wire protocol:
// the Postgres listener carries it in SASL messages, and Redis AUTH checks
// a password against the same verifiers.
package scram

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	xdgscram "github.com/xdg-go/scram"
)

// Mechanism is the SASL mechanism name.
const Mechanism = "SCRAM-SHA-256"

// defaultIterations matches PostgreSQL's scram_iterations default.
const defaultIterations = 4096

// Verifier is a SCRAM-SHA-256 verifier in PostgreSQL's rolpassword form,
// "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>". It lets the
// proxy check a password without storing the password.
type Verifier struct {
	Iterations int
	Salt       []byte
	StoredKey  []byte
	ServerKey  []byte
}

// NewVerifier derives a verifier from a password with a fresh random salt.
func NewVerifier(password string) (Verifier, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return Verifier{}, fmt.Errorf("scram salt: %w", err)
	}
	return deriveVerifier(password, salt, defaultIterations)
}

// DeriveVerifier derives a verifier from a password and a given salt: the
// same inputs give the same verifier, so a credential that a configuration
// holds in plaintext keeps its identity each time the configuration is
// compiled again.
func DeriveVerifier(password string, salt []byte) (Verifier, error) {
	return deriveVerifier(password, salt, defaultIterations)
}

func deriveVerifier(password string, salt []byte, iters int) (Verifier, error) {
	client, err := xdgscram.SHA256.NewClient("", password, "")
	if err != nil {
		return Verifier{}, fmt.Errorf("scram password: %w", err)
	}
	sc := client.GetStoredCredentials(xdgscram.KeyFactors{Salt: string(salt), Iters: iters})
	return Verifier{Iterations: iters, Salt: salt, StoredKey: sc.StoredKey, ServerKey: sc.ServerKey}, nil
}

// ParseVerifier parses PostgreSQL's "SCRAM-SHA-256$…" verifier text.
func ParseVerifier(s string) (Verifier, error) {
	rest, ok := strings.CutPrefix(s, "SCRAM-SHA-256$")
	if !ok {
		return Verifier{}, errors.New(`verifier must start with "SCRAM-SHA-256$"`)
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return Verifier{}, errors.New("verifier: missing keys after '$'")
	}
	iterText, saltText, ok := strings.Cut(params, ":")
	if !ok {
		return Verifier{}, errors.New("verifier: expected <iterations>:<salt>")
	}
	iters, err := strconv.Atoi(iterText)
	if err != nil || iters < 1 || iters > 10_000_000 {
		return Verifier{}, fmt.Errorf("verifier: bad iteration count %q", iterText)
	}
	storedText, serverText, ok := strings.Cut(keys, ":")
	if !ok {
		return Verifier{}, errors.New("verifier: expected <StoredKey>:<ServerKey>")
	}
	v := Verifier{Iterations: iters}
	for _, f := range []struct {
		name string
		text string
		dst  *[]byte
		size int
	}{{"salt", saltText, &v.Salt, 0}, {"StoredKey", storedText, &v.StoredKey, sha256.Size}, {"ServerKey", serverText, &v.ServerKey, sha256.Size}} {
		b, err := base64.StdEncoding.DecodeString(f.text)
		if err != nil || len(b) == 0 || (f.size > 0 && len(b) != f.size) {
			return Verifier{}, fmt.Errorf("verifier: bad %s", f.name)
		}
		*f.dst = b
	}
	return v, nil
}

// String formats v as PostgreSQL stores it.
func (v Verifier) String() string {
	enc := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", v.Iterations, enc(v.Salt), enc(v.StoredKey), enc(v.ServerKey))
}

// Equal reports whether two verifiers are the same credential, comparing keys in constant time.
func (v Verifier) Equal(o Verifier) bool {
	return v.Iterations == o.Iterations &&
		subtle.ConstantTimeCompare(v.Salt, o.Salt) == 1 &&
		subtle.ConstantTimeCompare(v.StoredKey, o.StoredKey) == 1 &&
		subtle.ConstantTimeCompare(v.ServerKey, o.ServerKey) == 1
}

// MockVerifier returns a verifier no password matches, with a salt derived
// from name and secret, so an unknown user runs the same exchange as a known
// one and cannot be told apart (PostgreSQL's scram_mock_salt).
func MockVerifier(name string, secret []byte) Verifier {
	h := sha256.New()
	h.Write(secret)
	h.Write([]byte(name))
	sum := h.Sum(nil)
	keys := sha256.Sum256(append(sum, 'k'))
	return Verifier{Iterations: defaultIterations, Salt: sum[:16], StoredKey: keys[:], ServerKey: keys[:]}
}

// Server runs the server side of one SCRAM-SHA-256 exchange. The SCRAM
// user name is ignored, as PostgreSQL does: the startup packet names the user.
type Server struct {
	conv *xdgscram.ServerConversation
}

// NewServer starts an exchange that checks the client against v.
func NewServer(v Verifier) (*Server, error) {
	srv, err := xdgscram.SHA256.NewServer(func(string) (xdgscram.StoredCredentials, error) {
		return xdgscram.StoredCredentials{
			KeyFactors: xdgscram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations},
			StoredKey:  v.StoredKey,
			ServerKey:  v.ServerKey,
		}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("scram server: %w", err)
	}
	return &Server{conv: srv.NewConversation()}, nil
}

// Step consumes one client message and returns the server's reply. After the
// final step, Valid reports whether the proof matched.
func (s *Server) Step(clientMsg []byte) ([]byte, error) {
	out, err := s.conv.Step(string(clientMsg))
	return []byte(out), err
}

// Valid reports whether the client proved knowledge of the password.
func (s *Server) Valid() bool { return s.conv.Valid() }

// Verify reports whether password matches the verifier, for protocols that
// receive the password itself (Redis AUTH). It costs one PBKDF2 of
// Iterations rounds; compare in constant time.
func (v Verifier) Verify(password string) bool {
	d, err := deriveVerifier(password, v.Salt, v.Iterations)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(d.StoredKey, v.StoredKey) == 1 && subtle.ConstantTimeCompare(d.ServerKey, v.ServerKey) == 1
}
