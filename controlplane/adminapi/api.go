// Package adminapi is the control plane's admin HTTP API: read and change
// the versioned policy, browse its history and roll back, suspend and
// resume tenants, and read the audit trail with its verification. Every
// call needs the admin bearer token; every error is JSON
// {"error":{"code","message"}} with a stable code (and "field", the
// policy field's path, for invalid_policy and plaintext_credential).
//
//	GET  /v1/policy                   → the current policy (JSON; YAML when Accept asks for application/yaml),
//	                                    ETag "<version>", X-Policy-Version
//	PUT  /v1/policy                   policy JSON or YAML → {"version","parent","author","comment","created_at","diff"}
//	                                    If-Match "<version>": 412 version_conflict unless it is still current;
//	                                    ?hash_credentials=true: plaintext credentials are hashed, else refused
//	GET  /v1/policy/versions          ?limit=&before= → {"versions":[…],"next_before"}, newest first
//	GET  /v1/policy/versions/{n}      → {"version",…,"diff","policy":{…}}
//	POST /v1/policy/rollback          {"version": n} → the new version, whose policy is version n's
//	GET  /v1/audit                    ?limit=&after=|cursor=&verify=incremental|full → {"entries":[…],"more","next_cursor",
//	                                    "verified","verification","checked","verified_seq","keyed_from_seq",
//	                                    "signatures_checked","last_full_verification","first_bad_seq","problem"}
//	POST /v1/tenants/{id}/suspend     → {"version",…,"tenant","suspended":true,"changed"}
//	POST /v1/tenants/{id}/resume      → {"version",…,"tenant","suspended":false,"changed"}
//
// and, with WithOperations, the tenant lifecycle operations (operations.go).
//
// Writes are attributed to the X-Author header ("admin" when absent) and
// may carry an X-Comment header. Both are what the caller says: the token
// proves only that the caller is an administrator.
package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/internal/adminhttp"
	"github.com/tenantguard/tenantguard/internal/bearer"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Error codes in the JSON body {"error":{"code","message"}}.
const (
	CodeUnauthorized        = adminhttp.CodeUnauthorized   // 401: missing or wrong admin token
	CodeInvalidRequest      = adminhttp.CodeInvalidRequest // 400: body, header, query or path not acceptable; 404 for an unknown endpoint
	CodeBodyTooLarge        = "body_too_large"             // 413
	CodeInvalidPolicy       = "invalid_policy"             // 400: the policy does not parse or validate; "field" names the path
	CodePlaintextCredential = "plaintext_credential"       // 400: a credential is not a SCRAM verifier and hash_credentials is not set
	CodeVersionConflict     = "version_conflict"           // 412: If-Match names a version that is no longer current
	CodeNoPolicy            = "no_policy"                  // 404: no version is stored yet
	CodeVersionNotFound     = "version_not_found"          // 404
	CodeUnknownTenant       = "unknown_tenant"             // 404: the current policy has no such tenant
	CodeCursorMismatch      = "cursor_mismatch"            // 409: the audit entry a cursor names has changed since it was listed
	CodeAuditKeyRequired    = "audit_key_required"         // 503: the audit chain is signed and this control plane has no signing key
	CodeStoreUnavailable    = "store_unavailable"          // 503: the database cannot be reached
	CodeInternal            = "internal"                   // 500
)

// Body size bounds: a policy with thousands of tenants fits in a few MB.
const (
	maxPolicyBody  = 8 << 20
	maxRequestBody = 16 << 10
)

// defaultAuthor is who a write is attributed to without an X-Author header.
const defaultAuthor = "admin"

// Store is what the API needs of the policy store; *store.Store has it.
type Store interface {
	Current(ctx context.Context) (store.Version, error)
	Get(ctx context.Context, n int64) (store.Version, error)
	List(ctx context.Context, limit int, before int64) ([]store.VersionInfo, error)
	Put(ctx context.Context, author, comment string, p *policypb.Policy) (store.Version, error)
	PutIf(ctx context.Context, author, comment string, p *policypb.Policy, expectParent int64) (store.Version, error)
	Rollback(ctx context.Context, author string, to int64) (store.Version, error)
	SetSuspended(ctx context.Context, author, tenant string, suspended bool) (store.Version, error)
	SetPlacement(ctx context.Context, author, tenant string, pl store.Placement) (store.Version, error)
	Audit(ctx context.Context, q store.AuditQuery) (store.AuditPage, error)
	VerifyAudit(ctx context.Context, mode store.VerifyMode) (store.AuditReport, error)
}

var _ Store = (*store.Store)(nil)

// Handler serves the admin API.
type Handler struct {
	store Store
	gate  http.Handler
	log   *slog.Logger
	mux   *http.ServeMux

	ops        Operations // nil: no operation endpoints
	maxArchive int64
}

// New returns the API over st. adminToken is the bearer token that may
// call it (at least 16 characters).
func New(st Store, adminToken string, log *slog.Logger, opts ...Option) (*Handler, error) {
	tok, err := bearer.New(adminToken)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	if st == nil {
		return nil, errors.New("no policy store")
	}
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{store: st, log: log, mux: http.NewServeMux()}
	h.gate = adminhttp.Gate(tok, h.mux)
	h.mux.HandleFunc("GET /v1/policy", h.getPolicy)
	h.mux.HandleFunc("PUT /v1/policy", h.putPolicy)
	h.mux.HandleFunc("GET /v1/policy/versions", h.listVersions)
	h.mux.HandleFunc("GET /v1/policy/versions/{n}", h.getVersion)
	h.mux.HandleFunc("POST /v1/policy/rollback", h.rollback)
	h.mux.HandleFunc("GET /v1/audit", h.audit)
	h.mux.HandleFunc("POST /v1/tenants/{id}/suspend", h.suspend(true))
	h.mux.HandleFunc("POST /v1/tenants/{id}/resume", h.suspend(false))
	h.mux.HandleFunc("PUT /v1/tenants/{id}/placement", h.setPlacement)
	for _, o := range opts {
		o(h)
	}
	return h, nil
}

// ServeHTTP checks the admin token, then routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.gate.ServeHTTP(w, r) }

// versionInfo is a version's metadata on the wire.
type versionInfo struct {
	Version   int64     `json:"version"`
	Parent    int64     `json:"parent"`
	Author    string    `json:"author"`
	Comment   string    `json:"comment"`
	CreatedAt time.Time `json:"created_at"`
}

func infoOf(vi store.VersionInfo) versionInfo {
	return versionInfo{Version: vi.Version, Parent: vi.Parent, Author: vi.Author, Comment: vi.Comment, CreatedAt: vi.CreatedAt}
}

// written is the answer to a write: the new version and its diff.
type written struct {
	versionInfo
	Diff string `json:"diff"`
}

// storeError maps a store error to its response; notFound is the code for
// store.ErrNotFound on this endpoint.
func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, err error, notFound string) {
	var conflict *store.ConflictError
	switch {
	case errors.Is(err, store.ErrInvalid):
		writePolicyError(w, CodeInvalidPolicy, err)
	case errors.As(err, &conflict):
		w.Header().Set("ETag", etag(conflict.Current))
		writeError(w, http.StatusPreconditionFailed, CodeVersionConflict,
			fmt.Sprintf("the policy changed: version %d is current, not %d; read it again and reapply your change", conflict.Current, conflict.Expected))
	case errors.Is(err, store.ErrBadText):
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, err.Error())
	case errors.Is(err, store.ErrAuditKeyRequired):
		h.log.Error("write refused: no audit signing key", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusServiceUnavailable, CodeAuditKeyRequired,
			"this control plane has no audit signing key (audit_key_file) and the audit trail is signed; retry on another control plane, or configure the key")
	case errors.Is(err, store.ErrEmpty):
		writeError(w, http.StatusNotFound, CodeNoPolicy, "no policy is stored yet")
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, notFound, err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away; nothing to answer.
	default:
		h.log.Error("policy store", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusServiceUnavailable, CodeStoreUnavailable, "the policy store cannot be reached; retry shortly")
	}
}

// decode reads a small JSON body strictly (adminhttp.Decode).
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return adminhttp.Decode(w, r, v, maxRequestBody)
}

type (
	errorBody   = adminhttp.ErrorBody
	errorDetail = adminhttp.ErrorDetail
)

var (
	writeError = adminhttp.WriteError
	writeJSON  = adminhttp.WriteJSON
)
