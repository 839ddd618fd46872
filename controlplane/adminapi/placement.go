package adminapi

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/policy"
)

// placement is the answer to PUT /v1/tenants/{id}/placement.
type placement struct {
	written
	Tenant    string          `json:"tenant"`
	Placement store.Placement `json:"placement"`
	// Changed is false when the tenant was placed so already; then no
	// version was written and the current one is returned.
	Changed bool `json:"changed"`
}

// setPlacement moves a tenant: PUT /v1/tenants/{id}/placement with
// {"postgres": "cluster", "redis": "cluster"} (either may be empty or
// absent: that kind's default). One new version, audited as "place".
func (h *Handler) setPlacement(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("id")
	if err := policy.CheckTenantID(tenant); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, err.Error())
		return
	}
	var pl store.Placement
	if !decode(w, r, &pl) {
		return
	}
	author, _ := attribution(r)
	v, err := h.store.SetPlacement(r.Context(), author, tenant, pl)
	changed := err == nil
	if errors.Is(err, store.ErrUnchanged) {
		err = nil
	}
	if err != nil {
		h.storeError(w, r, err, CodeUnknownTenant)
		return
	}
	if changed {
		h.log.Info("tenant placement changed", "tenant", tenant, "postgres", pl.Postgres, "redis", pl.Redis, "version", v.Version, "author", author)
	}
	w.Header().Set("ETag", etag(v.Version))
	w.Header().Set("X-Policy-Version", strconv.FormatInt(v.Version, 10))
	writeJSON(w, http.StatusOK, placement{written{infoOf(v.VersionInfo), v.Diff}, tenant, pl, changed})
}
