package sections

import (
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy"
)

// SessionsFile is the `sessions:` section, shared by the sidecar (which
// accepts tokens as credentials) and ext_authz (which issues and checks
// them). Key files are PEM, as written by `tenantguard extauthz keygen`.
type SessionsFile struct {
	// Store is the session store, a redis:// URL (rediss:// for TLS).
	Store string `yaml:"store"`
	// TLS, with a rediss:// store: ca_file verifies the store's
	// certificate (default: the system's roots), cert_file and key_file
	// are presented if it asks for a client certificate.
	TLS *ClientTLSFile `yaml:"tls"`
	// VerificationKeys are public key files; a token verifies if its key id
	// is among them. During a rotation list both the new and the old key.
	VerificationKeys []string `yaml:"verification_keys"`
	// EndMode: "boundary" (default) or "immediate" — when a data-plane
	// connection whose session is revoked or expires is ended.
	EndMode string `yaml:"end_mode"`
	// EndGrace bounds boundary mode: a transaction (or MULTI) still open
	// this long after its session ended is ended at once. Default 30s.
	EndGrace Duration `yaml:"end_grace"`
	// Grace keeps already-verified sessions working this long after the
	// store becomes unreachable; 0 fails closed at once.
	Grace Duration `yaml:"grace"`

	// ext_authz only.
	SigningKey         string   `yaml:"signing_key"`
	TTL                Duration `yaml:"ttl"`
	MaxAge             Duration `yaml:"max_age"`
	StripAuthorization *bool    `yaml:"strip_authorization"`
}

// Sessions is the compiled `sessions:` section.
type Sessions struct {
	StoreURL           string
	StoreTLS           *tlsconf.ClientFiles // non-nil exactly for a rediss:// store
	VerificationKeys   []*token.VerificationKey
	EndMode            policy.SessionEndMode
	EndGrace           time.Duration
	Grace              time.Duration
	SigningKey         *token.SigningKey // ext_authz only
	TTL, MaxAge        time.Duration
	StripAuthorization bool
}

// ParseSessions compiles the section; base resolves relative key paths
// (the configuration file's directory). signing says whether a signing key
// is required (ext_authz) or refused (sidecar: it only verifies).
func ParseSessions(f *SessionsFile, base string, signing bool) (*Sessions, *FieldError) {
	out := &Sessions{Grace: time.Duration(f.Grace), EndGrace: time.Duration(f.EndGrace), TTL: time.Duration(f.TTL), MaxAge: time.Duration(f.MaxAge), StripAuthorization: true}
	if out.EndGrace == 0 {
		out.EndGrace = 30 * time.Second
	}
	if f.StripAuthorization != nil {
		out.StripAuthorization = *f.StripAuthorization
	}
	u, err := url.Parse(f.Store)
	if f.Store == "" || err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return nil, &FieldError{"sessions.store", "required: a redis:// URL of the session store (e.g. redis://127.0.0.1:6379/1)"}
	}
	out.StoreURL = f.Store
	switch {
	case u.Scheme == "rediss":
		tf := f.TLS
		if tf == nil {
			tf = &ClientTLSFile{}
		}
		var fe *FieldError
		if out.StoreTLS, fe = ParseClientTLS(tf, base, "sessions.tls"); fe != nil {
			return nil, fe
		}
	case f.TLS != nil:
		return nil, &FieldError{"sessions.tls", "the store is redis://: use rediss:// for TLS"}
	}
	switch f.EndMode {
	case "", "boundary":
		out.EndMode = policy.SessionEndBoundary
	case "immediate":
		out.EndMode = policy.SessionEndImmediate
	default:
		return nil, &FieldError{"sessions.end_mode", fmt.Sprintf("%q is not an end mode (boundary or immediate)", f.EndMode)}
	}
	if out.TTL != 0 && out.TTL < time.Second {
		return nil, &FieldError{"sessions.ttl", "must be at least 1s"}
	}
	if out.MaxAge != 0 && out.TTL != 0 && out.MaxAge < out.TTL {
		return nil, &FieldError{"sessions.max_age", "must not be shorter than sessions.ttl"}
	}
	ids := map[string]bool{}
	for i, p := range f.VerificationKeys {
		field := fmt.Sprintf("sessions.verification_keys[%d]", i)
		data, err := os.ReadFile(Resolve(base, p))
		if err != nil {
			return nil, &FieldError{field, err.Error()}
		}
		keys, err := token.ParseVerificationKeys(data)
		if err != nil {
			return nil, &FieldError{field, err.Error()}
		}
		for _, k := range keys {
			if ids[k.ID()] {
				return nil, &FieldError{field, fmt.Sprintf("key id %q is listed twice", k.ID())}
			}
			ids[k.ID()] = true
			out.VerificationKeys = append(out.VerificationKeys, k)
		}
	}
	switch {
	case signing && f.SigningKey == "":
		return nil, &FieldError{"sessions.signing_key", "required: the PEM signing key new tokens are signed with"}
	case !signing && f.SigningKey != "":
		return nil, &FieldError{"sessions.signing_key", "a sidecar only verifies tokens: give it verification_keys, never the signing key"}
	case signing:
		data, err := os.ReadFile(Resolve(base, f.SigningKey))
		if err != nil {
			return nil, &FieldError{"sessions.signing_key", err.Error()}
		}
		k, err := token.ParseSigningKey(data)
		if err != nil {
			return nil, &FieldError{"sessions.signing_key", err.Error()}
		}
		out.SigningKey = k
		if !ids[k.ID()] {
			out.VerificationKeys = append(out.VerificationKeys, k.Public())
		}
	}
	if len(out.VerificationKeys) == 0 {
		return nil, &FieldError{"sessions.verification_keys", "at least one verification key is required"}
	}
	return out, nil
}
