package adminapi

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
)

// auditEntry is an audit entry on the wire, hashes in hex.
type auditEntry struct {
	Seq      int64           `json:"seq"`
	At       time.Time       `json:"at"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Version  int64           `json:"version"`
	Detail   json.RawMessage `json:"detail"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
}

type auditPage struct {
	Entries []auditEntry `json:"entries"`
	// Verified says whether the whole chain verified (store.VerifyAudit),
	// not only the entries listed.
	Verified bool `json:"verified"`
	// Checked is how many entries verified before the first problem.
	Checked int `json:"checked"`
	// FirstBadSeq is the first entry that does not verify; null when the
	// chain verifies, or when the problem is a version with no entry.
	FirstBadSeq *int64 `json:"first_bad_seq"`
	// BadVersion is the version concerned by the problem, if any.
	BadVersion *int64 `json:"bad_version,omitempty"`
	Problem    string `json:"problem,omitempty"`
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
	entries, err := h.store.Audit(r.Context(), int(min(limit, store.MaxAuditLimit)), after)
	if err != nil {
		h.storeError(w, r, err, CodeInternal)
		return
	}
	page := auditPage{Entries: make([]auditEntry, 0, len(entries))}
	for _, e := range entries {
		page.Entries = append(page.Entries, auditEntry{
			Seq: e.Seq, At: e.At, Actor: e.Actor, Action: e.Action, Version: e.Version, Detail: e.Detail,
			PrevHash: hex.EncodeToString(e.PrevHash), Hash: hex.EncodeToString(e.Hash),
		})
	}
	checked, err := h.store.VerifyAudit(r.Context())
	page.Checked = checked
	var bad *store.AuditError
	switch {
	case err == nil:
		page.Verified = true
	case errors.As(err, &bad):
		h.log.Error("audit trail does not verify", "seq", bad.Seq, "version", bad.Version, "reason", bad.Reason)
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
