package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// verifierPrefix starts every SCRAM-SHA-256 verifier; any other credential
// is plaintext.
const verifierPrefix = "SCRAM-SHA-256$"

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// wantsYAML reports whether the client's Accept header prefers YAML.
func wantsYAML(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && isYAMLType(mt) {
			return true
		}
	}
	return r.URL.Query().Get("format") == "yaml"
}

func isYAMLType(mt string) bool {
	switch mt {
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		return true
	}
	return false
}

func (h *Handler) getPolicy(w http.ResponseWriter, r *http.Request) {
	v, err := h.store.Current(r.Context())
	if err != nil {
		h.storeError(w, r, err, CodeNoPolicy)
		return
	}
	tag := etag(v.Version)
	w.Header().Set("ETag", tag)
	w.Header().Set("X-Policy-Version", strconv.FormatInt(v.Version, 10))
	w.Header().Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && strings.TrimPrefix(strings.TrimSpace(inm), "W/") == tag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	marshal, ctype := policypb.MarshalJSON, "application/json"
	if wantsYAML(r) {
		marshal, ctype = policypb.MarshalYAML, "application/yaml"
	}
	body, err := marshal(v.Policy)
	if err != nil {
		h.log.Error("marshal policy", "version", v.Version, "error", err)
		writeError(w, http.StatusInternalServerError, CodeInternal, "the stored policy cannot be written out")
		return
	}
	w.Header().Set("Content-Type", ctype)
	_, _ = w.Write(body)
}

// putPolicy stores a new version. The body is YAML when the Content-Type
// says so (application/yaml, application/x-yaml, text/yaml), JSON when it
// says JSON, and otherwise (curl -d sends a form type) JSON if its first
// non-blank character is '{', else YAML. A "version" in the body is
// ignored: the store numbers versions.
func (h *Handler) putPolicy(w http.ResponseWriter, r *http.Request) {
	expect, conditional, ok := ifMatch(w, r)
	if !ok {
		return
	}
	hash, ok := boolParam(w, r, "hash_credentials")
	if !ok {
		return
	}
	author, comment := attribution(r)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPolicyBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("a policy body is at most %d bytes", maxPolicyBody))
			return
		}
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, "cannot read the body")
		return
	}
	parse := policypb.ParseJSON
	if isYAML(r.Header.Get("Content-Type"), body) {
		parse = policypb.ParseYAML
	}
	p, err := parse(body)
	if err != nil {
		writePolicyError(w, CodeInvalidPolicy, err)
		return
	}
	if field := plaintextCredential(p); field != "" {
		if !hash {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: errorDetail{
				Code:    CodePlaintextCredential,
				Field:   field,
				Message: field + " is plaintext: send SCRAM-SHA-256 verifiers, or add ?hash_credentials=true to have them hashed",
			}})
			return
		}
		if err := policypb.HashCredentials(p); err != nil {
			writePolicyError(w, CodeInvalidPolicy, err)
			return
		}
	}
	var v store.Version
	if conditional {
		v, err = h.store.PutIf(r.Context(), author, comment, p, expect)
	} else {
		v, err = h.store.Put(r.Context(), author, comment, p)
	}
	if err != nil {
		h.storeError(w, r, err, CodeNoPolicy)
		return
	}
	h.log.Info("policy stored", "version", v.Version, "author", author)
	h.writeWritten(w, v)
}

func (h *Handler) writeWritten(w http.ResponseWriter, v store.Version) {
	w.Header().Set("ETag", etag(v.Version))
	w.Header().Set("X-Policy-Version", strconv.FormatInt(v.Version, 10))
	writeJSON(w, http.StatusOK, written{infoOf(v.VersionInfo), v.Diff})
}

// isYAML decides how a policy body is parsed; see putPolicy.
func isYAML(contentType string, body []byte) bool {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		if isYAMLType(mt) {
			return true
		}
		if mt == "application/json" || strings.HasSuffix(mt, "+json") {
			return false
		}
	}
	trimmed := bytes.TrimLeftFunc(body, unicode.IsSpace)
	return len(trimmed) > 0 && trimmed[0] != '{'
}

// plaintextCredential names the first credential that is not a verifier.
func plaintextCredential(p *policypb.Policy) string {
	for i, t := range p.GetTenants() {
		for j, c := range t.GetCredentials() {
			if !strings.HasPrefix(c, verifierPrefix) {
				return fmt.Sprintf("tenants[%d].credentials[%d]", i, j)
			}
		}
	}
	return ""
}

// writePolicyError answers 400 with the field the error names, if any.
func writePolicyError(w http.ResponseWriter, code string, err error) {
	d := errorDetail{Code: code, Message: err.Error()}
	var fe *policy.FieldError
	if errors.As(err, &fe) {
		d.Field = fe.Field
	}
	writeJSON(w, http.StatusBadRequest, errorBody{Error: d})
}

// ifMatch reads If-Match: one entity tag, "<version>" (or W/"<version>",
// or the bare number); "*" or no header means unconditional.
func ifMatch(w http.ResponseWriter, r *http.Request) (version int64, conditional, ok bool) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	if v == "" || v == "*" {
		return 0, false, true
	}
	s := strings.Trim(strings.TrimPrefix(v, "W/"), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, `If-Match must be one version as an entity tag, e.g. If-Match: "12"`)
		return 0, false, false
	}
	return n, true, true
}

// attribution reads X-Author (default "admin") and X-Comment; the store
// refuses ones it cannot keep (store.ErrBadText, a 400).
func attribution(r *http.Request) (author, comment string) {
	author = strings.TrimSpace(r.Header.Get("X-Author"))
	if author == "" {
		author = defaultAuthor
	}
	return author, strings.TrimSpace(r.Header.Get("X-Comment"))
}

func boolParam(w http.ResponseWriter, r *http.Request, name string) (bool, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, true
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, name+" must be true or false")
		return false, false
	}
	return b, true
}

// intParam reads a non-negative integer query parameter; 0 when absent.
func intParam(w http.ResponseWriter, r *http.Request, name string) (int64, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, name+" must be a non-negative integer")
		return 0, false
	}
	return n, true
}

type versionList struct {
	Versions []versionInfo `json:"versions"`
	// NextBefore is the before= of the next (older) page; absent on the
	// last page.
	NextBefore int64 `json:"next_before,omitempty"`
}

func (h *Handler) listVersions(w http.ResponseWriter, r *http.Request) {
	limit, ok := intParam(w, r, "limit")
	if !ok {
		return
	}
	before, ok := intParam(w, r, "before")
	if !ok {
		return
	}
	limit = min(limit, store.MaxListLimit)
	if limit == 0 {
		limit = store.DefaultListLimit
	}
	vs, err := h.store.List(r.Context(), int(limit), before)
	if err != nil {
		h.storeError(w, r, err, CodeVersionNotFound)
		return
	}
	out := versionList{Versions: make([]versionInfo, 0, len(vs))}
	for _, vi := range vs {
		out.Versions = append(out.Versions, infoOf(vi))
	}
	if len(vs) == int(limit) && vs[len(vs)-1].Version > 1 {
		out.NextBefore = vs[len(vs)-1].Version
	}
	writeJSON(w, http.StatusOK, out)
}

type versionBody struct {
	versionInfo
	Diff   string          `json:"diff"`
	Policy json.RawMessage `json:"policy"`
}

func (h *Handler) getVersion(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
	if err != nil || n <= 0 {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, "a version is a positive integer")
		return
	}
	v, err := h.store.Get(r.Context(), n)
	if err != nil {
		h.storeError(w, r, err, CodeVersionNotFound)
		return
	}
	body, err := policypb.MarshalJSON(v.Policy)
	if err != nil {
		h.log.Error("marshal policy", "version", v.Version, "error", err)
		writeError(w, http.StatusInternalServerError, CodeInternal, "the stored policy cannot be written out")
		return
	}
	w.Header().Set("ETag", etag(v.Version))
	writeJSON(w, http.StatusOK, versionBody{infoOf(v.VersionInfo), v.Diff, body})
}

type rollbackRequest struct {
	Version int64 `json:"version"`
}

func (h *Handler) rollback(w http.ResponseWriter, r *http.Request) {
	var req rollbackRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Version <= 0 {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, `the body is {"version": n}, n the version to restore`)
		return
	}
	author, _ := attribution(r)
	v, err := h.store.Rollback(r.Context(), author, req.Version)
	if err != nil {
		h.storeError(w, r, err, CodeVersionNotFound)
		return
	}
	h.log.Info("policy rolled back", "version", v.Version, "to", req.Version, "author", author)
	h.writeWritten(w, v)
}

type suspension struct {
	written
	Tenant    string `json:"tenant"`
	Suspended bool   `json:"suspended"`
	// Changed is false when the tenant was already in that state; then no
	// version was written and the current one is returned.
	Changed bool `json:"changed"`
}

func (h *Handler) suspend(suspended bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenant := r.PathValue("id")
		if err := policy.CheckTenantID(tenant); err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, err.Error())
			return
		}
		author, _ := attribution(r)
		v, err := h.store.SetSuspended(r.Context(), author, tenant, suspended)
		changed := err == nil
		if errors.Is(err, store.ErrUnchanged) {
			err = nil
		}
		if err != nil {
			h.storeError(w, r, err, CodeUnknownTenant)
			return
		}
		if changed {
			h.log.Info("tenant suspension changed", "tenant", tenant, "suspended", suspended, "version", v.Version, "author", author)
		}
		w.Header().Set("ETag", etag(v.Version))
		w.Header().Set("X-Policy-Version", strconv.FormatInt(v.Version, 10))
		writeJSON(w, http.StatusOK, suspension{written{infoOf(v.VersionInfo), v.Diff}, tenant, suspended, changed})
	}
}
