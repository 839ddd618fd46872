// Package api is the session HTTP API: issue, inspect, refresh and revoke
// session tokens, and read a session's analytics. Every call needs the
// admin bearer token; every error is JSON with a stable code.
//
//	POST   /v1/sessions                  {"tenant_id","user_id"} → 201 {"session_id","token","expires_at",…}
//	GET    /v1/sessions/{id}             → the session (never its token)
//	DELETE /v1/sessions/{id}             → 204; revoked everywhere within a second
//	POST   /v1/sessions/{id}/refresh     → {"session_id","token","expires_at",…}
//	GET    /v1/sessions/{id}/analytics   → counts, refusals by rule, distinct statements, anomaly score
//	GET    /v1/tenants/{id}/sessions     → {"sessions":[…]}
//	DELETE /v1/tenants/{id}/sessions     → {"revoked": n}
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"

	"github.com/tenantguard/tenantguard/policy"

	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/adminhttp"
	"github.com/tenantguard/tenantguard/internal/bearer"
)

// Error codes in the JSON body {"error":{"code","message"}}.
const (
	CodeUnauthorized     = adminhttp.CodeUnauthorized   // 401: missing or wrong admin token
	CodeInvalidRequest   = adminhttp.CodeInvalidRequest // 400: body or path not acceptable
	CodeUnknownTenant    = "unknown_tenant"             // 404: the policy has no such tenant
	CodeNotFound         = "session_not_found"          // 404: unknown, revoked or expired session
	CodeMaxAge           = "max_age_reached"            // 409: refresh refused, the session is at its maximum age
	CodeStoreUnavailable = "store_unavailable"          // 503: the session store cannot be reached
	CodeInternal         = "internal"                   // 500
)

// maxBody bounds request bodies; a session request is a few dozen bytes.
const maxBody = 16 << 10

// Handler serves the session API.
type Handler struct {
	store  *session.Store
	gate   http.Handler
	tenant func(id string) bool
	log    *slog.Logger
	mux    *http.ServeMux
}

// New returns the API. adminToken is the bearer token that may call it;
// tenantExists says whether the policy has a tenant (sessions are issued
// only for those).
func New(store *session.Store, adminToken string, tenantExists func(string) bool, log *slog.Logger) (*Handler, error) {
	tok, err := bearer.New(adminToken)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{store: store, tenant: tenantExists, log: log, mux: http.NewServeMux()}
	h.gate = adminhttp.Gate(tok, h.mux)
	h.mux.HandleFunc("POST /v1/sessions", h.create)
	h.mux.HandleFunc("GET /v1/sessions/{id}", h.get)
	h.mux.HandleFunc("DELETE /v1/sessions/{id}", h.revoke)
	h.mux.HandleFunc("POST /v1/sessions/{id}/refresh", h.refresh)
	h.mux.HandleFunc("GET /v1/sessions/{id}/analytics", h.analytics)
	h.mux.HandleFunc("GET /v1/tenants/{id}/sessions", h.list)
	h.mux.HandleFunc("DELETE /v1/tenants/{id}/sessions", h.revokeTenant)
	return h, nil
}

// ServeHTTP checks the admin token, then routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.gate.ServeHTTP(w, r) }

// issued is what create and refresh return: the session and its new token.
type issued struct {
	session.Session
	Token string `json:"token"`
}

type createRequest struct {
	TenantID string `json:"tenant_id"`
	UserID   string `json:"user_id"`
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if !decode(w, r, &req) {
		return
	}
	if !policy.ValidTenantID(req.TenantID) {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, "tenant_id must be a tenant id (lower-case letters, digits, '-', '_'; at most 63)")
		return
	}
	if h.tenant != nil && !h.tenant(req.TenantID) {
		writeError(w, http.StatusNotFound, CodeUnknownTenant, fmt.Sprintf("the policy has no tenant %q", req.TenantID))
		return
	}
	s, tok, err := h.store.Create(r.Context(), req.TenantID, req.UserID)
	if err != nil {
		if errors.Is(err, token.ErrInvalidClaims) {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, "user_id must be 1 to 255 printable ASCII characters without spaces")
			return
		}
		h.storeError(w, r, err)
		return
	}
	h.log.Info("session created", "session", s.ID, "tenant", s.Tenant, "user", s.User)
	w.Header().Set("Location", "/v1/sessions/"+s.ID)
	writeJSON(w, http.StatusCreated, issued{s, tok})
}

var sessionIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// sessionID reads and checks the {id} path segment.
func sessionID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !sessionIDPattern.MatchString(id) {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, "a session id is 32 lower-case hex digits")
		return "", false
	}
	return id, true
}

func tenantID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !policy.ValidTenantID(id) {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, "not a tenant id")
		return "", false
	}
	return id, true
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	s, err := h.store.Get(r.Context(), id)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	if err := h.store.Revoke(r.Context(), id); err != nil {
		h.storeError(w, r, err)
		return
	}
	h.log.Info("session revoked", "session", id)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) refresh(w http.ResponseWriter, r *http.Request) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	s, tok, err := h.store.Refresh(r.Context(), id)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, issued{s, tok})
}

func (h *Handler) analytics(w http.ResponseWriter, r *http.Request) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	a, err := h.store.Analytics(r.Context(), id)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	t, ok := tenantID(w, r)
	if !ok {
		return
	}
	ss, err := h.store.List(r.Context(), t)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if ss == nil {
		ss = []session.Session{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": ss})
}

func (h *Handler) revokeTenant(w http.ResponseWriter, r *http.Request) {
	t, ok := tenantID(w, r)
	if !ok {
		return
	}
	n, err := h.store.RevokeTenant(r.Context(), t)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.log.Info("tenant sessions revoked", "tenant", t, "count", n)
	writeJSON(w, http.StatusOK, map[string]int{"revoked": n})
}

// storeError maps a store error to its response.
func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, session.ErrNotFound):
		writeError(w, http.StatusNotFound, CodeNotFound, "no such session (it may have expired or been revoked)")
	case errors.Is(err, session.ErrMaxAge):
		writeError(w, http.StatusConflict, CodeMaxAge, "the session has reached its maximum age; sign in again")
	case errors.Is(err, context.Canceled):
		// The client went away; nothing to answer.
	default:
		h.log.Error("session store", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusServiceUnavailable, CodeStoreUnavailable, "the session store cannot be reached; retry shortly")
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return adminhttp.Decode(w, r, v, maxBody)
}

var (
	writeError = adminhttp.WriteError
	writeJSON  = adminhttp.WriteJSON
)
