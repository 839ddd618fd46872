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
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"

	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
)

// Error codes in the JSON body {"error":{"code","message"}}.
const (
	CodeUnauthorized     = "unauthorized"      // 401: missing or wrong admin token
	CodeInvalidRequest   = "invalid_request"   // 400: body or path not acceptable
	CodeUnknownTenant    = "unknown_tenant"    // 404: the policy has no such tenant
	CodeNotFound         = "session_not_found" // 404: unknown, revoked or expired session
	CodeMaxAge           = "max_age_reached"   // 409: refresh refused, the session is at its maximum age
	CodeStoreUnavailable = "store_unavailable" // 503: the session store cannot be reached
	CodeInternal         = "internal"          // 500
)

// maxBody bounds request bodies; a session request is a few dozen bytes.
const maxBody = 16 << 10

// Handler serves the session API.
type Handler struct {
	store  *session.Store
	admin  [sha256.Size]byte
	tenant func(id string) bool
	log    *slog.Logger
	mux    *http.ServeMux
}

// New returns the API. adminToken is the bearer token that may call it;
// tenantExists says whether the policy has a tenant (sessions are issued
// only for those).
func New(store *session.Store, adminToken string, tenantExists func(string) bool, log *slog.Logger) (*Handler, error) {
	if len(adminToken) < 16 {
		return nil, errors.New("admin token must have at least 16 characters")
	}
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{store: store, admin: sha256.Sum256([]byte(adminToken)), tenant: tenantExists, log: log, mux: http.NewServeMux()}
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
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tenantguard-admin"`)
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "this API needs the admin bearer token")
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		writeError(w, http.StatusNotFound, CodeInvalidRequest, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
		return
	}
	h.mux.ServeHTTP(w, r)
}

// authorized compares SHA-256 digests in constant time, so neither the
// token's length nor its content leaks through timing.
func (h *Handler) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], h.admin[:]) == 1
}

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
	if !token.ValidTenantID(req.TenantID) {
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
	if !token.ValidTenantID(id) {
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

// decode reads a JSON body strictly: bounded, one object, no unknown
// fields. The Content-Type is not checked (curl -d sends
// application/x-www-form-urlencoded); the body must be JSON whatever it says.
// Browsers cannot add the bearer token cross-origin without a preflight, so
// this opens no CSRF path.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, "bad JSON body: "+err.Error())
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, "bad JSON body: more than one value")
		return false
	}
	return true
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
