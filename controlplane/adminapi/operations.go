package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tenantguard/tenantguard/controlplane/lifecycle"
	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// Error codes of the operation endpoints.
const (
	CodeUnknownOperation    = "unknown_operation"     // 404: no operation of that kind (POST /v1/tenants/{id}/{kind})
	CodeInvalidParams       = "invalid_params"        // 400: the operation's parameters are not acceptable
	CodeOperationInProgress = "operation_in_progress" // 409: the tenant has an operation running
	CodeOperationNotFound   = "operation_not_found"   // 404
	CodeOperationFinished   = "operation_finished"    // 409: cancel of a finished operation
	CodeNotCancellable      = "not_cancellable"       // 409: past its point of no return
	CodeNoArchive           = "no_archive"            // 404: the operation wrote no archive (or it was removed)
	CodeBadArchive          = "bad_archive"           // 400: an uploaded archive does not verify
)

// Operations is what the operation endpoints need: a workflow engine with
// the lifecycle kinds, and the archive directory (lifecycle.Operations).
type Operations interface {
	Start(ctx context.Context, kind, tenant, actor string, params json.RawMessage) (store.Operation, error)
	Get(ctx context.Context, id string) (store.Operation, error)
	List(ctx context.Context, q store.OperationQuery) ([]store.Operation, error)
	Cancel(ctx context.Context, id string) (store.Operation, error)
	Kind(name string) (workflow.Kind, bool)
	ArchivePath(id string) (string, bool)
	SaveUpload(r io.Reader, max int64) (string, error)
}

// Option configures New.
type Option func(*Handler)

// WithOperations serves the tenant lifecycle operations:
//
//	POST /v1/tenants/{id}/{kind}       kind provision, export, import, offboard, move; JSON parameters
//	                                   (import: or the archive itself, Content-Type application/x-tar)
//	                                   → 202 the operation, Location /v1/operations/{op}
//	GET  /v1/operations                ?tenant=&active=true&limit=&before= → {"operations":[…],"next_before"}
//	GET  /v1/operations/{op}           → the operation with its steps and progress
//	POST /v1/operations/{op}/cancel    → 202 the operation (undoing what it did)
//	GET  /v1/operations/{op}/archive   → the archive it wrote (application/x-tar)
//
// maxArchive bounds an uploaded archive.
func WithOperations(ops Operations, maxArchive int64) Option {
	return func(h *Handler) {
		h.ops, h.maxArchive = ops, maxArchive
		h.mux.HandleFunc("POST /v1/tenants/{id}/{kind}", h.startOperation)
		h.mux.HandleFunc("GET /v1/operations", h.listOperations)
		h.mux.HandleFunc("GET /v1/operations/{op}", h.getOperation)
		h.mux.HandleFunc("POST /v1/operations/{op}/cancel", h.cancelOperation)
		h.mux.HandleFunc("GET /v1/operations/{op}/archive", h.operationArchive)
	}
}

// OperationView is an operation on the wire.
type OperationView struct {
	ID      string         `json:"id"`
	Kind    string         `json:"kind"`
	Tenant  string         `json:"tenant"`
	Actor   string         `json:"actor"`
	State   string         `json:"state"`
	Params  map[string]any `json:"params,omitempty"`
	Step    int            `json:"step"`
	Steps   []StepView     `json:"steps"`
	Percent int            `json:"percent"`
	Error   string         `json:"error,omitempty"`
	// Result is what the operation reports (counts, versions, its
	// archive); for an offboarding, "deleted" holds the rows per table
	// and keys it removed.
	Result          json.RawMessage `json:"result"`
	CancelRequested bool            `json:"cancel_requested"`
	LeaseOwner      string          `json:"lease_owner,omitempty"`
	LeaseExpires    *time.Time      `json:"lease_expires,omitempty"`
	Claims          int             `json:"claims"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
	FinishedAt      *time.Time      `json:"finished_at,omitempty"`
	// Archive is the download path of the archive the operation wrote.
	Archive string `json:"archive,omitempty"`
}

// StepView is one step on the wire.
type StepView struct {
	Name       string     `json:"name"`
	Status     string     `json:"status"`
	Forward    bool       `json:"point_of_no_return,omitempty"`
	Attempts   int        `json:"attempts,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Error      string     `json:"error,omitempty"`
	Done       int64      `json:"done,omitempty"`
	Total      int64      `json:"total,omitempty"`
	Message    string     `json:"message,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (h *Handler) view(op store.Operation) OperationView {
	v := OperationView{ID: op.ID, Kind: op.Kind, Tenant: op.Tenant, Actor: op.Actor, State: op.State, Step: op.Step,
		Error: op.Error, Result: op.Result, CancelRequested: op.CancelRequested, LeaseOwner: op.LeaseOwner,
		LeaseExpires: timePtr(op.LeaseExpires), Claims: op.Claims, CreatedAt: op.CreatedAt, UpdatedAt: op.UpdatedAt,
		FinishedAt: timePtr(op.FinishedAt), Steps: []StepView{}}
	if len(v.Result) == 0 {
		v.Result = json.RawMessage("{}")
	}
	if k, ok := h.ops.Kind(op.Kind); ok && k.Summary != nil {
		v.Params = k.Summary(op.Params)
	}
	steps, _ := workflow.Steps(op)
	var done float64
	for _, s := range steps {
		v.Steps = append(v.Steps, StepView{Name: s.Name, Status: s.Status, Forward: s.Forward, Attempts: s.Attempts,
			StartedAt: s.StartedAt, FinishedAt: s.FinishedAt, Error: s.Error, Done: s.Done, Total: s.Total, Message: s.Message})
		switch {
		case s.Status == workflow.StepDone:
			done++
		case s.Status == workflow.StepRunning && s.Total > 0:
			done += float64(min(s.Done, s.Total)) / float64(s.Total)
		}
	}
	if len(steps) > 0 {
		v.Percent = int(100 * done / float64(len(steps)))
	}
	if op.State == store.OpSucceeded {
		v.Percent = 100
	}
	if _, ok := h.ops.ArchivePath(op.ID); ok {
		v.Archive = "/v1/operations/" + op.ID + "/archive"
	}
	return v
}

// provisionRequest is POST /v1/tenants/{id}/provision's body: the tenant
// as a policy file has it (credentials may be plaintext: they are hashed
// before the operation is stored) and the seed.
type provisionRequest struct {
	Credentials          []string        `json:"credentials"`
	Allow                json.RawMessage `json:"allow,omitempty"`
	Limits               json.RawMessage `json:"limits,omitempty"`
	ShowConstraintDetail bool            `json:"show_constraint_detail,omitempty"`
	Seed                 json.RawMessage `json:"seed,omitempty"`
	ReadyTimeout         string          `json:"ready_timeout,omitempty"`
}

// provisionParams turns the request into the operation's parameters.
func provisionParams(tenant string, body []byte) (json.RawMessage, error) {
	var req provisionRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("bad JSON body: %w", err)
	}
	t := map[string]any{"id": tenant, "credentials": req.Credentials}
	if len(req.Allow) > 0 {
		t["allow"] = req.Allow
	}
	if len(req.Limits) > 0 {
		t["limits"] = req.Limits
	}
	if req.ShowConstraintDetail {
		t["show_constraint_detail"] = true
	}
	tj, _ := json.Marshal(t)
	pt := &policypb.Tenant{}
	if err := protojson.Unmarshal(tj, pt); err != nil {
		return nil, fmt.Errorf("tenant: %w", err)
	}
	p := &policypb.Policy{Tenants: []*policypb.Tenant{pt}}
	if err := policypb.HashCredentials(p); err != nil {
		return nil, err
	}
	tb, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(pt)
	if err != nil {
		return nil, err
	}
	params := map[string]any{"tenant": json.RawMessage(tb)}
	if len(req.Seed) > 0 {
		params["seed"] = req.Seed
	}
	if req.ReadyTimeout != "" {
		params["ready_timeout"] = req.ReadyTimeout
	}
	return json.Marshal(params)
}

func (h *Handler) startOperation(w http.ResponseWriter, r *http.Request) {
	tenant, kind := r.PathValue("id"), r.PathValue("kind")
	if err := policy.CheckTenantID(tenant); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, err.Error())
		return
	}
	if _, ok := h.ops.Kind(kind); !ok {
		writeError(w, http.StatusNotFound, CodeUnknownOperation, fmt.Sprintf("no operation %q: provision, export, import, offboard or move", kind))
		return
	}
	author, _ := attribution(r)
	var params json.RawMessage
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if kind == "import" && (mt == "application/x-tar" || mt == "application/tar") {
		name, err := h.ops.SaveUpload(http.MaxBytesReader(w, r.Body, h.maxArchive+1), h.maxArchive)
		if err != nil {
			h.archiveError(w, err)
			return
		}
		params, _ = json.Marshal(map[string]string{"archive": name})
	} else {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPolicyBody))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("parameters are at most %d bytes", maxPolicyBody))
			return
		}
		if len(bytes.TrimSpace(body)) == 0 {
			body = []byte("{}")
		}
		params = body
		if kind == "provision" {
			if params, err = provisionParams(tenant, body); err != nil {
				writePolicyError(w, CodeInvalidParams, err)
				return
			}
		}
	}
	op, err := h.ops.Start(r.Context(), kind, tenant, author, params)
	if err != nil {
		h.operationError(w, r, err)
		return
	}
	h.log.Info("operation started", "operation", op.ID, "kind", kind, "tenant", tenant, "author", author)
	w.Header().Set("Location", "/v1/operations/"+op.ID)
	writeJSON(w, http.StatusAccepted, h.view(op))
}

func (h *Handler) archiveError(w http.ResponseWriter, err error) {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("an archive is at most %d bytes", h.maxArchive))
	case errors.Is(err, lifecycle.ErrBadArchive):
		writeError(w, http.StatusBadRequest, CodeBadArchive, err.Error())
	default:
		h.log.Error("cannot store an uploaded archive", "error", err)
		writeError(w, http.StatusServiceUnavailable, CodeInternal, "the archive cannot be stored: "+err.Error())
	}
}

// operationError maps an engine error to its response.
func (h *Handler) operationError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, workflow.ErrInvalidParams):
		writeError(w, http.StatusBadRequest, CodeInvalidParams, err.Error())
	case errors.Is(err, workflow.ErrUnknownKind):
		writeError(w, http.StatusNotFound, CodeUnknownOperation, err.Error())
	case errors.Is(err, store.ErrOperationActive):
		writeError(w, http.StatusConflict, CodeOperationInProgress, err.Error()+": wait for it, or cancel it")
	case errors.Is(err, store.ErrFinished):
		writeError(w, http.StatusConflict, CodeOperationFinished, err.Error())
	case errors.Is(err, workflow.ErrPastPivot):
		writeError(w, http.StatusConflict, CodeNotCancellable, err.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, CodeOperationNotFound, err.Error())
	default:
		h.storeError(w, r, err, CodeOperationNotFound)
	}
}

type operationList struct {
	Operations []OperationView `json:"operations"`
	NextBefore string          `json:"next_before,omitempty"`
}

func (h *Handler) listOperations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := intParam(w, r, "limit")
	if !ok {
		return
	}
	active, ok := boolParam(w, r, "active")
	if !ok {
		return
	}
	if t := q.Get("tenant"); t != "" {
		if err := policy.CheckTenantID(t); err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, err.Error())
			return
		}
	}
	limit = min(limit, store.MaxListLimit)
	if limit == 0 {
		limit = store.DefaultListLimit
	}
	ops, err := h.ops.List(r.Context(), store.OperationQuery{Tenant: q.Get("tenant"), Active: active, Limit: int(limit), Before: q.Get("before")})
	if err != nil {
		h.operationError(w, r, err)
		return
	}
	out := operationList{Operations: make([]OperationView, 0, len(ops))}
	for _, op := range ops {
		out.Operations = append(out.Operations, h.view(op))
	}
	if len(ops) == int(limit) {
		out.NextBefore = ops[len(ops)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) getOperation(w http.ResponseWriter, r *http.Request) {
	op, err := h.ops.Get(r.Context(), r.PathValue("op"))
	if err != nil {
		h.operationError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h.view(op))
}

func (h *Handler) cancelOperation(w http.ResponseWriter, r *http.Request) {
	op, err := h.ops.Cancel(r.Context(), r.PathValue("op"))
	if err != nil {
		h.operationError(w, r, err)
		return
	}
	author, _ := attribution(r)
	h.log.Info("operation cancel requested", "operation", op.ID, "author", author)
	writeJSON(w, http.StatusAccepted, h.view(op))
}

func (h *Handler) operationArchive(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("op")
	path, ok := h.ops.ArchivePath(id)
	if !ok {
		writeError(w, http.StatusNotFound, CodeNoArchive, fmt.Sprintf("operation %s has no archive", id))
		return
	}
	f, err := os.Open(path)
	if err != nil {
		writeError(w, http.StatusNotFound, CodeNoArchive, fmt.Sprintf("operation %s has no archive", id))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "cannot read the archive")
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.tar"`)
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	http.ServeContent(w, r, id+".tar", fi.ModTime(), f)
}
