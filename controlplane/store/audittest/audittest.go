// Package audittest rewrites the policy store's audit history directly in
// PostgreSQL, as a database superuser could, for tests that check the
// chain's verification catches it. It computes hashes from the encoding
// that controlplane/store's package documentation specifies, without the
// store's own code, so it is also a second implementation of that
// specification (as the Python recipe there is a third).
//
// Its canonical JSON is encoding/json's compact, key-sorted output without
// HTML escaping, which matches the specification for the text tests write
// (no control characters, no U+2028 or U+2029, valid UTF-8).
package audittest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Canonical is the canonical JSON of v (see the package comment for its
// limits).
func Canonical(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// Decode decodes JSON text keeping numbers as their text, so that
// Canonical writes them back unchanged.
func Decode(text string) any {
	dec := json.NewDecoder(bytes.NewReader([]byte(text)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		panic(err)
	}
	return v
}

// Hash is an entry's hash: SHA-256 over the canonical JSON of
// [seq, at, actor, action, version, detail, prev_hash].
func Hash(seq int64, at time.Time, actor, action string, version int64, detail any, prevHash []byte) []byte {
	sum := sha256.Sum256(Canonical([]any{seq, at.UTC().Format(time.RFC3339Nano), actor, action, version, detail, hex.EncodeToString(prevHash)}))
	return sum[:]
}

// Rechain recomputes prev_hash and hash of every audit entry with seq at
// least from, in seq order, from the entries' current contents, and points
// the head row at the new end: what a superuser who rewrote entry from does
// to make the hash chain consistent again. Signature columns, if the schema
// has them, are left as they are. It runs in one transaction.
func Rechain(ctx context.Context, conn *pgx.Conn, from int64) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	prev := make([]byte, sha256.Size)
	if from > 1 {
		if err := tx.QueryRow(ctx, `SELECT hash FROM tenantguard_cp.audit WHERE seq = $1`, from-1).Scan(&prev); err != nil {
			return fmt.Errorf("entry %d: %w", from-1, err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT seq, at, actor, action, version, detail::text
		FROM tenantguard_cp.audit WHERE seq >= $1 ORDER BY seq`, from)
	if err != nil {
		return err
	}
	type entry struct {
		seq, version  int64
		at            time.Time
		actor, action string
		detail        string
	}
	var entries []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.seq, &e.at, &e.actor, &e.action, &e.version, &e.detail); err != nil {
			return err
		}
		entries = append(entries, e)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var last entry
	for _, e := range entries {
		h := Hash(e.seq, e.at, e.actor, e.action, e.version, Decode(e.detail), prev)
		if _, err := tx.Exec(ctx, `UPDATE tenantguard_cp.audit SET prev_hash = $2, hash = $3 WHERE seq = $1`, e.seq, prev, h); err != nil {
			return err
		}
		prev, last = h, e
	}
	if len(entries) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE tenantguard_cp.head SET audit_seq = $1, audit_hash = $2, version = $3 WHERE id = 1`,
			last.seq, prev, last.version); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// Connect opens a connection for the helpers, closed when the test ends.
func Connect(t testing.TB, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// Signer signs an entry's hash, returning the key id and signature to
// store with it.
type Signer func(hash []byte) (keyID string, sig []byte)

// Append writes n more versions, each with its audit entry, after the
// newest, in one transaction (COPY), as bulk test data that verifies: each
// version's policy is the newest one's with its version number changed,
// written by author "bulk" with action put, an empty diff and comment
// "bulk <n>". sign, if not nil, signs each entry; nil writes them unsigned
// (the schema may then be migration 1's). The store must hold a version.
func Append(ctx context.Context, conn *pgx.Conn, n int, sign Signer) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var headVersion, headSeq int64
	var headHash []byte
	var policyText string
	var last time.Time
	if err := tx.QueryRow(ctx, `SELECT h.version, h.audit_seq, h.audit_hash, v.policy::text, v.created_at
		FROM tenantguard_cp.head h JOIN tenantguard_cp.versions v ON v.version = h.version
		WHERE h.id = 1 FOR UPDATE OF h`).Scan(&headVersion, &headSeq, &headHash, &policyText, &last); err != nil {
		return fmt.Errorf("head: %w", err)
	}
	policy := Decode(policyText).(map[string]any)
	emptyDiff := sha256.Sum256(nil)
	at := time.Now().UTC().Truncate(time.Microsecond)
	if !at.After(last) {
		at = last.UTC().Add(time.Microsecond)
	}
	var versions, entries [][]any
	prev, keyID := headHash, ""
	for i := range n {
		ver, seq := headVersion+int64(i)+1, headSeq+int64(i)+1
		policy["version"] = fmt.Sprint(ver)
		body := Canonical(policy)
		sum := sha256.Sum256(body)
		comment := fmt.Sprintf("bulk %d", ver)
		detail := map[string]any{
			"policy_sha256": hex.EncodeToString(sum[:]),
			"diff_sha256":   hex.EncodeToString(emptyDiff[:]),
			"comment":       comment,
			"parent":        json.Number(fmt.Sprint(ver - 1)),
		}
		t := at.Add(time.Duration(i) * time.Microsecond)
		h := Hash(seq, t, "bulk", "put", ver, detail, prev)
		versions = append(versions, []any{ver, json.RawMessage(body), "bulk", t, comment, "", ver - 1})
		row := []any{seq, t, "bulk", "put", ver, json.RawMessage(Canonical(detail)), prev, h}
		if sign != nil {
			var sig []byte
			keyID, sig = sign(h)
			row = append(row, keyID, sig)
		}
		entries = append(entries, row)
		prev = h
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"tenantguard_cp", "versions"},
		[]string{"version", "policy", "author", "created_at", "comment", "diff", "parent"}, pgx.CopyFromRows(versions)); err != nil {
		return fmt.Errorf("copy versions: %w", err)
	}
	cols := []string{"seq", "at", "actor", "action", "version", "detail", "prev_hash", "hash"}
	if sign != nil {
		cols = append(cols, "key_id", "signature")
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"tenantguard_cp", "audit"}, cols, pgx.CopyFromRows(entries)); err != nil {
		return fmt.Errorf("copy audit: %w", err)
	}
	q := `UPDATE tenantguard_cp.head SET version = $1, audit_seq = $2, audit_hash = $3 WHERE id = 1`
	args := []any{headVersion + int64(n), headSeq + int64(n), prev}
	if sign != nil {
		q = `UPDATE tenantguard_cp.head SET version = $1, audit_seq = $2, audit_hash = $3, audit_key_id = $4 WHERE id = 1`
		args = append(args, keyID)
	}
	if _, err := tx.Exec(ctx, q, args...); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Resign replaces the key id and signature of every entry with seq at
// least from with sign's, and head's key id: a forger signing with a key
// of their own.
func Resign(ctx context.Context, conn *pgx.Conn, from int64, sign Signer) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	rows, err := tx.Query(ctx, `SELECT seq, hash FROM tenantguard_cp.audit WHERE seq >= $1 ORDER BY seq`, from)
	if err != nil {
		return err
	}
	hashes := map[int64][]byte{}
	for rows.Next() {
		var seq int64
		var h []byte
		if err := rows.Scan(&seq, &h); err != nil {
			return err
		}
		hashes[seq] = h
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var keyID string
	for seq, h := range hashes {
		var sig []byte
		keyID, sig = sign(h)
		if _, err := tx.Exec(ctx, `UPDATE tenantguard_cp.audit SET key_id = $2, signature = $3 WHERE seq = $1`, seq, keyID, sig); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE tenantguard_cp.head SET audit_key_id = $1`, keyID); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
