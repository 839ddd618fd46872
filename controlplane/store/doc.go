// Package store is the control plane's versioned policy store on
// PostgreSQL: every change to the policy is a new numbered version with its
// author, comment and a diff against its parent; every version is written
// with a hash-chained audit entry in the same transaction; and every
// control plane on the database learns of new versions through
// LISTEN/NOTIFY (Subscribe), so that the xDS server can push them.
//
// # Schema
//
// Open creates the schema tenantguard_cp (idempotently, under an advisory
// lock, recorded in tenantguard_cp.schema_migrations):
//
//	versions(version bigint PK, policy jsonb, author text, created_at timestamptz,
//	         comment text, diff text, parent bigint NULL → versions)
//	audit(seq bigserial PK, at timestamptz, actor text, action text, version bigint,
//	      detail jsonb, prev_hash bytea, hash bytea)
//	head(id = 1, version bigint, audit_seq bigint, audit_hash bytea)
//
// versions.policy is the protojson of policypb.Policy (proto field names)
// with "version" set to the version number as a string. Writers lock the
// single head row (SELECT … FOR UPDATE), so versions are numbered 1, 2, 3,
// … and audit entries 1, 2, 3, … without gaps, one writer at a time, and
// the chain never forks. The audit seq is assigned from head, not from the
// column's sequence, so a rolled-back transaction leaves no gap.
//
// # Audit hash chain
//
// Each audit entry's hash is SHA-256 over the canonical JSON (below) of
// the array
//
//	[seq, at, actor, action, version, detail, prev_hash]
//
// where seq and version are integers; at is the entry's time in UTC as Go's
// time.RFC3339Nano writes it ("2026-05-01T10:20:30.123456Z": fraction
// without trailing zeros, none at all when zero, then "Z"); actor and
// action are strings; detail is the detail object; prev_hash is the
// previous entry's hash in lower-case hex, and 64 zeros for seq 1.
//
// detail holds policy_sha256 (the lower-case hex SHA-256 of the canonical
// JSON of the version's stored policy), diff_sha256 (of the diff text's
// UTF-8 bytes), comment, parent (null for the first version), and
// rollback_to (rollback) or tenant (suspend, resume). So the chain covers
// each version's policy body, diff and metadata, not only the audit rows.
//
// Canonical JSON is no whitespace, object keys sorted by code point,
// strings escaped only for '"', '\' and U+0000–U+001F (as \b \f \n \r \t,
// else \u00xx in lower-case hex), all else as UTF-8, integers in decimal.
// It is what Python's json.dumps(v, sort_keys=True, separators=(",", ":"),
// ensure_ascii=False) writes, so an auditor can re-verify the chain with
// psql and Python alone:
//
//	import datetime, hashlib, json, psycopg
//	canon = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
//	def rfc3339nano(t):  # t: an aware datetime
//	    t = t.astimezone(datetime.timezone.utc)
//	    frac = ("." + f"{t.microsecond:06d}".rstrip("0")) if t.microsecond else ""
//	    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"
//	prev = bytes(32)
//	for seq, at, actor, action, version, detail, prev_hash, h, policy in conn.execute(
//	        "SELECT a.seq, a.at, a.actor, a.action, a.version, a.detail::text, a.prev_hash, a.hash, v.policy::text"
//	        " FROM tenantguard_cp.audit a JOIN tenantguard_cp.versions v USING (version) ORDER BY a.seq"):
//	    d = json.loads(detail)
//	    assert bytes(prev_hash) == prev
//	    assert hashlib.sha256(canon([seq, rfc3339nano(at), actor, action, version, d, prev.hex()])).digest() == bytes(h)
//	    assert hashlib.sha256(canon(json.loads(policy))).hexdigest() == d["policy_sha256"]
//	    prev = bytes(h)
//
// Store.VerifyAudit does the same and more (seq gaps, the head row,
// versions without an entry). A hash chain without a secret detects
// changes by anyone who does not also recompute every later hash and the
// head row; each write logs its audit_hash, which anchors the chain in the
// logs.
//
// # Notifications
//
// A writer NOTIFYs tenantguard_cp_versions with the version number in the
// transaction that writes it. Each Store owns one listener connection
// (application_name ListenerApplicationName), started by Open and stopped
// by Close; when it fails, it reconnects with backoff and reads the
// current version, since notifications are not queued for a session that
// is gone.
package store
