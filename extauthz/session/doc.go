// Package session keeps tenantguard sessions in Redis and checks session
// tokens against them.
//
// Two sides share one Redis:
//
//   - Store is the issuing side, used by the session HTTP API: it creates
//     sessions and signs their tokens (package token), refreshes, lists and
//     revokes them, and reads their analytics.
//   - Verifier is the checking side, used by the ext_authz server and the
//     sidecars (as a policy.SessionVerifier): it verifies a token's
//     signatures and times, asks Redis once whether its session is still
//     live, caches that verdict, hears revocations over pub/sub, ends the
//     leases of data-plane connections whose session ends, and aggregates
//     per-session request counts for analytics.
//
// # Redis data model
//
// With the default prefix "tg:session:":
//
//	tg:session:<id>               hash: tenant, user, created, expires,
//	                              max_expires, refreshed, kid (unix seconds);
//	                              PEXPIREAT its expires
//	tg:session:tenant:<tenant>    zset of the tenant's session ids, scored by
//	                              expiry in unix ms; expired members are pruned
//	                              on Create and List
//	tg:session:<id>:stats         hash: requests, refused, refused:<rule>, tenant
//	tg:session:<id>:fp            HyperLogLog of statement fingerprints
//	tg:session:<id>:min           hash: "<unix minute>:r" requests, ":x" refusals,
//	                              ":n" new distinct fingerprints in that minute
//	tg:session:active             zset of session ids scored by their last analytics
//	                              flush (unix s); members older than five minutes
//	                              are pruned by every flush, and the key expires
//	                              five minutes after the last one
//	tg:session:revoked            pub/sub channel; the payload is a session id
//
// Create, Refresh, Revoke and RevokeTenant each run as one Lua script, so a
// session and its tenant index change together, a refresh cannot bring back
// a session revoked in the meantime, and a revocation is published in the
// same step that deletes the session. The analytics keys outlive their
// session by a day after its maximum expiry.
//
// # Verification
//
// Verifier.Verify (and Check) first looks for a cached verdict (ristretto,
// keyed by the first 8 bytes of the token's SHA-256 and holding all 32, so
// a key collision cannot lend one token another's verdict, and the
// verified claims). Hashing the 4.6 KB token once serves both the lookup
// and the comparison. A hit whose signing
// key is still held, whose token has not expired and whose session is not
// revoked is the answer: neither signature is checked again, which is most
// of the cost (about 70 µs of the 75). A removed key or an expired token is
// still refused at once, since both are checked on every hit. On a miss the
// token is verified (token.Verifier.Verify), the session's tenant and user
// are read from Redis (one HMGET), and the verdict is cached until the
// token expires. A refresh does not invalidate
// the older tokens of the same session: each stays good until its own
// expiry or until the session is revoked.
//
// # Revocation
//
// Each Verifier holds one subscription to the revocation channel. A message
// marks the session revoked in memory, which kills every cached verdict of
// the session at once (verdicts point at their session's state), and ends
// every open lease of it with policy.ErrSessionEnded. Pub/sub delivers at
// most once, so whenever the subscription is (re)established, every verdict
// cached before is discarded and the sessions of open leases are re-checked
// with one pipelined EXISTS; the ones gone are ended. Expired leases are
// ended by one watcher goroutine that keeps a heap of sessions ordered by
// their leases' earliest token expiry.
//
// # Store outages
//
// The store counts as reachable while the subscription is up (it is pinged
// every second). While it is not, tokens without a cached verdict fail with
// policy.ErrSessionUnavailable without any I/O: the verifier fails closed.
// With Config.Grace > 0, verdicts cached before the outage keep working
// until the outage is Grace old, and open leases end with
// policy.ErrSessionStoreLost then; with Grace 0 cached verdicts stop at once
// and open leases end as soon as the outage is detected, because a
// connection whose session could be revoked unnoticed must not stay open.
// When the subscription comes back, verification resumes by itself.
//
// # Analytics
//
// Lease.Record and Verifier.Record add to an in-memory aggregate per session
// under a short mutex, without I/O and, once a session's maps have grown,
// without allocation. One flusher goroutine writes the deltas to Redis every
// second in one pipeline of Lua scripts. Store.Analytics reads them back and
// computes an anomaly score: how far the last complete minute is from the
// session's own earlier minutes, in standard deviations (see Anomaly).
//
// # Metrics
//
// Record also counts into tenantguard_session_requests_total{tenant} and
// tenantguard_session_refusals_total{tenant,rule}, through counters each
// session state resolves once, so counting neither locks nor allocates.
// At most 200 tenant and 100 rule label values are used; the rest count as
// "_other". Store.ExportAnomalies scores the sessions flushed in the last
// five minutes (at most 1000) every 15 seconds, as Analytics does, and
// exports a series per session only for the few highest scores
// (tenantguard_session_anomaly_score{tenant,session_id}), with every score
// in the histogram tenantguard_session_anomaly_scores.
package session
