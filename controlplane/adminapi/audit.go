package adminapi

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
)

// auditEntry is an audit entry on the wire, hashes and signature in hex.
type auditEntry struct {
	Seq      int64           `json:"seq"`
	At       time.Time       `json:"at"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Version  int64           `json:"version"`
	Detail   json.RawMessage `json:"detail"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
	// KeyID and Signature are absent for an entry written before the
	// control plane had an audit key.
	KeyID     string `json:"key_id,omitempty"`
	Signature string `json:"signature,omitempty"`
}

type auditPage struct {
	Entries []auditEntry `json:"entries"`
	// More says entries follow the last one listed.
	More bool `json:"more"`
	// NextCursor is the cursor= that continues after the last entry
	// listed (the request's own when none is listed).
	NextCursor string `json:"next_cursor,omitempty"`

	// Verified says whether the chain verified (store.VerifyAudit), not
	// only the entries listed; Verification is the mode that ran.
	Verified     bool   `json:"verified"`
	Verification string `json:"verification"`
	// Checked is how many entries this request verified (before the
	// first problem, if any).
	Checked int `json:"checked"`
	// VerifiedSeq is the checkpoint: the chain verified from seq 1 up to
	// this entry.
	VerifiedSeq int64 `json:"verified_seq"`
	// KeyedFromSeq is the first signed entry (0: none).
	KeyedFromSeq      int64 `json:"keyed_from_seq"`
	SignaturesChecked bool  `json:"signatures_checked"`
	// LastFullVerification is when a full verification last passed in
	// this control plane; null if none has yet.
	LastFullVerification *time.Time `json:"last_full_verification"`
	// FirstBadSeq is the first entry that does not verify; null when the
	// chain verifies, or when the problem is a version with no entry.
	FirstBadSeq *int64 `json:"first_bad_seq"`
	// BadVersion is the version concerned by the problem, if any.
	BadVersion *int64 `json:"bad_version,omitempty"`
	Problem    string `json:"problem,omitempty"`
}

// formatCursor names an entry by seq and hash: "<seq>.<hash in hex>".
func formatCursor(seq int64, hash []byte) string {
	return strconv.FormatInt(seq, 10) + "." + hex.EncodeToString(hash)
}

func parseCursor(s string) (int64, []byte, error) {
	seqText, hashText, ok := strings.Cut(s, ".")
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if !ok || err != nil || seq < 1 {
		return 0, nil, errors.New("cursor is not one this API gave (next_cursor)")
	}
	hash, err := hex.DecodeString(hashText)
	if err != nil || len(hash) != 32 {
		return 0, nil, errors.New("cursor is not one this API gave (next_cursor)")
	}
	return seq, hash, nil
}

func (h *Handler) audit(w http.ResponseWriter, r *http.Request) {
	limit, ok := intParam(w, r, "limit")
	if !ok {
		return
	}
	after, ok := intParam(w, r, "after")
	if !ok {
		return
	}
	q := store.AuditQuery{Limit: int(min(limit, store.MaxAuditLimit)), After: after}
	cursor := r.URL.Query().Get("cursor")
	if cursor != "" {
		if r.URL.Query().Has("after") {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, "give after or cursor, not both")
			return
		}
		var err error
		if q.After, q.AfterHash, err = parseCursor(cursor); err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, err.Error())
			return
		}
	}
	mode := store.VerifyIncremental
	switch v := r.URL.Query().Get("verify"); v {
	case "", "incremental":
	case "full":
		mode = store.VerifyFull
	default:
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("verify=%.40q: want incremental (the default) or full", v))
		return
	}

	pg, err := h.store.Audit(r.Context(), q)
	if errors.Is(err, store.ErrCursorMismatch) {
		// History is append-only: the entry changed under the cursor.
		h.log.Error("audit entry changed under a cursor", "seq", q.After, "error", err)
		writeError(w, http.StatusConflict, CodeCursorMismatch,
			fmt.Sprintf("audit entry %d no longer has the hash it had when it was listed: the audit trail was altered (GET /v1/audit?verify=full)", q.After))
		return
	}
	if err != nil {
		h.storeError(w, r, err, CodeInternal)
		return
	}
	page := auditPage{Entries: make([]auditEntry, 0, len(pg.Entries)), More: pg.More, NextCursor: cursor}
	for _, e := range pg.Entries {
		ae := auditEntry{
			Seq: e.Seq, At: e.At, Actor: e.Actor, Action: e.Action, Version: e.Version, Detail: e.Detail,
			PrevHash: hex.EncodeToString(e.PrevHash), Hash: hex.EncodeToString(e.Hash), KeyID: e.KeyID,
		}
		if e.Signature != nil {
			ae.Signature = hex.EncodeToString(e.Signature)
		}
		page.Entries = append(page.Entries, ae)
		page.NextCursor = formatCursor(e.Seq, e.Hash)
	}

	rep, err := h.store.VerifyAudit(r.Context(), mode)
	page.Verification = rep.Mode.String()
	page.Checked, page.VerifiedSeq, page.KeyedFromSeq, page.SignaturesChecked = rep.Checked, rep.VerifiedSeq, rep.KeyedFromSeq, rep.SignaturesChecked
	if !rep.LastFull.IsZero() {
		t := rep.LastFull.UTC()
		page.LastFullVerification = &t
	}
	var bad *store.AuditError
	switch {
	case err == nil:
		page.Verified = true
	case errors.As(err, &bad):
		h.log.Error("audit trail does not verify", "mode", rep.Mode.String(), "seq", bad.Seq, "version", bad.Version, "reason", bad.Reason)
		page.Problem = bad.Error()
		if bad.Seq > 0 {
			page.FirstBadSeq = &bad.Seq
		}
		if bad.Version > 0 {
			page.BadVersion = &bad.Version
		}
	default:
		h.storeError(w, r, err, CodeInternal)
		return
	}
	writeJSON(w, http.StatusOK, page)
}
