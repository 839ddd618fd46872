// Package adminhttp holds what tenantguard's admin HTTP APIs (the session
// API, the control plane's admin API) share: the bearer-token gate, JSON
// errors {"error":{"code","message"}}, and strict JSON request bodies.
package adminhttp

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/tenantguard/tenantguard/internal/bearer"
)

// Error codes both APIs use.
const (
	CodeUnauthorized   = "unauthorized"    // 401: missing or wrong admin token
	CodeInvalidRequest = "invalid_request" // 400: body, path or query not acceptable; 404 for an unknown endpoint
)

// Gate serves mux to requests that carry the admin token: others get a 401
// with a Bearer challenge, and a request no route matches gets a JSON 404.
func Gate(tok bearer.Token, mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !tok.Matches(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tenantguard-admin"`)
			WriteError(w, http.StatusUnauthorized, CodeUnauthorized, "this API needs the admin bearer token")
			return
		}
		if _, pattern := mux.Handler(r); pattern == "" {
			WriteError(w, http.StatusNotFound, CodeInvalidRequest, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// ErrorBody is a JSON error answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is its content; Field names the offending field, if any.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// WriteError answers with a JSON error.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, ErrorBody{ErrorDetail{Code: code, Message: msg}})
}

// WriteJSON answers with v as JSON, not to be cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Decode reads a JSON body strictly into v: at most maxBytes, one value, no
// unknown fields; otherwise it answers 400 and returns false. The
// Content-Type is not checked (curl -d sends a form type); the body must be
// JSON whatever it says. Browsers cannot add the bearer token cross-origin
// without a preflight, so this opens no CSRF path.
func Decode(w http.ResponseWriter, r *http.Request, v any, maxBytes int64) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		WriteError(w, http.StatusBadRequest, CodeInvalidRequest, "bad JSON body: "+err.Error())
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		WriteError(w, http.StatusBadRequest, CodeInvalidRequest, "bad JSON body: more than one value")
		return false
	}
	return true
}
