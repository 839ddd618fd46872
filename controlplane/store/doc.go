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
//	      detail jsonb, prev_hash bytea, hash bytea,
//	      key_id text NULL, signature bytea NULL)          -- migration 2
//	head(id = 1, version bigint, audit_seq bigint, audit_hash bytea,
//	     audit_key_id text NULL)                           -- migration 2
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
// rollback_to (rollback) or tenant (suspend, resume; and operation for
// add_tenant and remove_tenant, a lifecycle operation's policy changes).
// So the chain covers each version's policy body, diff and metadata, not
// only the audit rows.
//
// Entries of action "operation" record a lifecycle operation's start and
// end (package controlplane/workflow) and write no version: their version
// is the one current when they were written, and their detail holds only
// the operation's own fields (operation, kind, tenant, event "start" or
// "end", and the parameters, state, error and result it reports). Each
// is written in the transaction that creates or finishes the operation.
//
// Canonical JSON is no whitespace, object keys sorted by code point,
// strings escaped only for '"', '\' and U+0000–U+001F (as \b \f \n \r \t,
// else \u00xx in lower-case hex), all else as UTF-8, integers in decimal.
// It is what Python's json.dumps(v, sort_keys=True, separators=(",", ":"),
// ensure_ascii=False) writes.
//
// # Audit signatures
//
// A hash chain alone does not stop whoever can write to the database: they
// rewrite an entry, recompute every later hash and the head row, and the
// chain verifies. So a control plane configured with an audit signing key
// (an Ed25519 key it holds and the database does not; package auditkey)
// also signs each entry it writes: signature is the Ed25519 signature of
// the ASCII message
//
//	"tenantguard-audit-entry:" + the entry's hash in lower-case hex
//
// and key_id names the key: the first 16 lower-case hex digits of the
// SHA-256 of its 32-byte raw public key. The hash covers the previous
// entry's hash, so a signature pins every entry before it too: rewriting
// any earlier entry changes this one's hash, and only the key's holder can
// sign the new one.
//
// An Ed25519 signature rather than an HMAC, because verifying then needs
// only the public key: auditors, a second team or an offline job verify
// the chain without being able to forge it, retired signing keys can be
// destroyed (their public halves keep verifying their entries), and the
// public keys can be pinned in many places. It costs about 70 µs per entry
// to verify, against 1 µs for an HMAC, which incremental verification
// keeps off the common path.
//
// Rotation: entries record their key, a verifier accepts several keys (the
// signing key's own and audit_verification_keys), and each control plane
// signs with one. Entries written before a key was configured keep
// key_id and signature NULL and verify by hash; the first signed entry
// (keyed_from_seq) pins them from the time it was written, but a rewrite
// before the upgrade cannot be told. After a signed entry, an unsigned one
// is a verification failure, and a control plane without a signing key
// refuses to write one (ErrAuditKeyRequired). Stripping every signature
// makes a signed chain look unsigned: a running Store remembers where
// signing began, and AuditKeys.SignedFrom (audit_signed_from) pins it
// across restarts.
//
// # Verifying
//
// Store.VerifyAudit checks all of the above and more: seq gaps, the head
// row, versions without an entry, and each version's author, time, diff,
// comment and parent against its entry. In full mode it reads the whole
// chain, which must still pass through the checkpoint with the hash
// verified then; incrementally it reads only from its checkpoint (the
// chain's end when a verification last passed in this process): the
// checkpoint's own entry again (its hash, content, signature and version,
// so a rewrite that recomputed later hashes is caught there) and every
// entry after it. An incremental check does not read entries before the
// checkpoint, so a change to one of them that leaves the checkpoint entry's
// hash alone (altering a row without recomputing the hashes after it) waits
// for the next full check; a problem, once found, is reported by every
// check until a full one passes.
//
// An auditor can verify the chain with psql and Python alone (and, for
// signatures, the cryptography package): export the chain as JSON lines,
// then run the script with the public keys.
//
//	psql "$DATABASE_URL" -XAt -c "SELECT row_to_json(r) FROM (SELECT a.seq,
//	    to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS at, a.actor, a.action, a.version,
//	    a.detail, encode(a.prev_hash, 'hex') AS prev_hash, encode(a.hash, 'hex') AS hash, a.key_id,
//	    encode(a.signature, 'hex') AS signature, v.policy, v.author, v.diff
//	  FROM tenantguard_cp.audit a LEFT JOIN tenantguard_cp.versions v USING (version) ORDER BY a.seq) r" > audit.jsonl
//	python3 verify_audit.py audit.jsonl audit-*.pub
//
// where verify_audit.py is
//
//	import hashlib, json, sys
//	from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
//	canon = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
//	sha = lambda b: hashlib.sha256(b).hexdigest()
//	keys, END = {}, b"-----END PUBLIC KEY-----"
//	for path in sys.argv[2:]:
//	    for pem in open(path, "rb").read().split(END)[:-1]:
//	        k = load_pem_public_key(pem + END)
//	        keys[sha(k.public_bytes(Encoding.Raw, PublicFormat.Raw))[:16]] = k
//	prev, signed_from, n = "0" * 64, None, 0
//	for n, line in enumerate(open(sys.argv[1]), 1):
//	    e = json.loads(line)
//	    d, at = e["detail"], e["at"].rstrip("0").rstrip(".") + "Z"
//	    def check(ok, why):
//	        if not ok: sys.exit(f"seq {n}: {why}")
//	    check(e["seq"] == n and e["prev_hash"] == prev, "missing, inserted or unlinked")
//	    h = sha(canon([e["seq"], at, e["actor"], e["action"], e["version"], d, prev]))
//	    check(h == e["hash"], "altered: the content does not match the hash")
//	    if e["action"] != "operation":  # operation entries write no version
//	        check(e["policy"] is not None and sha(canon(e["policy"])) == d["policy_sha256"], "policy body altered or missing")
//	        check(sha(e["diff"].encode()) == d["diff_sha256"] and e["author"] == e["actor"], "version altered")
//	    if e["key_id"] is None:
//	        check(signed_from is None, f"not signed, but the chain is signed from seq {signed_from}")
//	    else:
//	        signed_from = signed_from or n
//	        check(e["key_id"] in keys, f"signed with key {e['key_id']}, not among the keys given")
//	        try: keys[e["key_id"]].verify(bytes.fromhex(e["signature"]), b"tenantguard-audit-entry:" + h.encode())
//	        except Exception: check(False, "the signature does not verify")
//	    prev = h
//	print(f"{n} entries verify, signed from seq {signed_from}; the newest hash is {prev}")
//
// Compare the newest hash with the audit_hash the control plane logged for
// that seq ("policy version stored"), and signed_from with what you
// expect: these anchor the chain's end and start outside the database,
// against deleting the newest entries or stripping every signature.
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
