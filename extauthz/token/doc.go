// Package token implements tenantguard session tokens: short-lived bearer
// tokens that bind one session to one tenant and one user, issued by the
// session service and checked by the Envoy ext_authz service and the
// PostgreSQL and Redis sidecars.
//
// This package is only the format and the cryptography; it does no I/O,
// keeps no revocation list and reads no clock of its own (callers pass now).
//
// # Format (version 1)
//
//	tg1.<base64url(payload)>.<base64url(ed25519 sig || ml-dsa-65 sig)>
//
// base64url is RFC 4648 §5 without padding, and only its canonical form is
// accepted: no '=', no line breaks, no non-zero trailing bits. The payload
// is binary, big-endian:
//
//	offset size  field
//	0      1     version            0x01
//	1      1     algorithm          0x01 = Ed25519 and ML-DSA-65, both required
//	2      16    session id         random, never all zero
//	18     8     issued-at          unix seconds, >= 1
//	26     8     expires-at         unix seconds, > issued-at, <= year 9999
//	34     1+n   key id             1..64 bytes  [A-Za-z0-9][A-Za-z0-9._-]*
//	       1+n   tenant id          1..63 bytes  ^[a-z0-9][a-z0-9_-]{0,62}$
//	       1+n   user id            1..255 bytes of printable ASCII, no space
//
// Nothing may follow the user id. Both signatures are over the same message,
// "tenantguard-token-v1" || payload (ML-DSA-65 with an empty context string),
// so the version and algorithm bytes are signed and a token can't be
// re-labelled as another version or algorithm. A token verifies only if BOTH
// signatures verify under the two public keys stored under its key id: the
// hybrid stays unforgeable as long as either Ed25519 or ML-DSA-65 holds.
// (circl's eddilithium schemes pair Ed448 with pre-standard Dilithium, not
// FIPS 204 ML-DSA, so the pair is built here explicitly.)
//
// # Size
//
// The signature part is fixed: 64 + 3309 = 3373 bytes, 4498 base64 characters.
// A token is 4 + ceil(4/3·(37+len(kid)+len(tenant)+len(user))) + 1 + 4498
// characters: 4574 for kid "2026-01", tenant "acme", user "alice", and at
// most MaxTokenLen = 5062 with every field at its maximum. The alphabet is
// [A-Za-z0-9._-], so a token needs no quoting or escaping in an HTTP header,
// a URL's userinfo or a libpq keyword/value connection string. Tests check
// that a maximal token passes
//
//   - as "Authorization: Bearer <token>" through net/http with the whole
//     request head limited to 8 KiB (nginx's default header buffer; Envoy's
//     default limit is 60 KiB);
//   - as the password of a pgx connection given in a postgres:// URL (the
//     cleartext PasswordMessage body is 5063 bytes), read by a server with
//     the 8 KiB pre-authentication message limit of the tenantguard
//     PostgreSQL sidecar. PostgreSQL itself accepts password packets up to
//     65535 bytes (PG_MAX_AUTH_TOKEN_LENGTH); the Redis sidecar's pre-auth
//     limit for one AUTH argument is 16 KiB.
//
// Since the verifier must see the token itself, a PostgreSQL client has to
// send it as a cleartext password (over TLS), not through SCRAM.
//
// # Cost
//
// On the development machine (2 cores of an AMD EPYC "Turin"-class VM, amd64
// with AVX2, shared with other work): Sign about 0.17 ms, dominated by
// ML-DSA-65 signing (0.14 ms). Verify checks ML-DSA-65 first (circl's AVX2
// code, about 19 µs; about 56 µs with -tags purego), then Ed25519 with
// tables of the key's multiples computed when the key is loaded (about
// 100 KB per key; see edKey): 219k instructions against crypto/ed25519's
// 620k, about 15 µs instead of 43 µs, accepting exactly the same
// signatures. Verify decodes into pooled buffers and allocates only the
// claims' strings. It refuses malformed input before any signature check,
// in 0.3 µs for a wrong length and a few µs at most, and stops at the
// first signature that fails.
//
// # Keys and rotation
//
// A SigningKey is a pair of 32-byte seeds (Ed25519, ML-DSA-65) with a key id;
// its VerificationKey is the two public keys with the same id. Both are
// stored as PEM (see SigningKey.MarshalPEM and VerificationKey.MarshalPEM).
// A Verifier holds several verification keys at once: to rotate, add the new
// key to every verifier, then sign with it, then remove the old key once the
// tokens it signed have expired.
package token
