package injectorsvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kjson "sigs.k8s.io/json"

	"github.com/tenantguard/tenantguard/internal/inject"
)

// Paths the webhook serves. The webhook configuration calls /inject/namespace
// for pods of namespaces labelled tenantguard.io/inject=true (injected
// unless they opt out) and /inject for every other pod (injected only if
// annotated): the handler cannot see a namespace's labels.
const (
	PathNamespace  = "/inject/namespace"
	PathAnnotation = "/inject"
)

// maxReviewBytes bounds a request body; the API server's own limit on an
// object is about 1.5 MiB.
const maxReviewBytes = 8 << 20

// Results, the "result" label of tenantguard_injector_requests_total.
const (
	resultInjected   = "injected"    // a patch was sent
	resultUnchanged  = "unchanged"   // injected already, as it would be now
	resultSkipped    = "skipped"     // opted out, not opted in, another kind or operation
	resultDenied     = "denied"      // injection impossible, failure policy fail
	resultFailedOpen = "failed_open" // injection impossible, failure policy ignore
	resultMalformed  = "malformed"   // not an AdmissionReview we can read
)

type admissionMetrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

func newAdmissionMetrics(reg prometheus.Registerer) *admissionMetrics {
	m := &admissionMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_injector_requests_total",
			Help: "AdmissionReview requests by result: injected, unchanged, skipped, denied, failed_open, malformed.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tenantguard_injector_request_duration_seconds",
			Help:    "Time to answer an AdmissionReview.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
	}
	for _, r := range []string{resultInjected, resultUnchanged, resultSkipped, resultDenied, resultFailedOpen, resultMalformed} {
		m.requests.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// admission answers AdmissionReview v1 requests with the injection's
// JSON patch.
type admission struct {
	sidecar *inject.Config
	scope   inject.Scope
	log     *slog.Logger
	m       *admissionMetrics
}

func (a *admission) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	review, result := a.review(w, r)
	a.m.requests.WithLabelValues(result).Inc()
	a.m.duration.Observe(time.Since(start).Seconds())
	if review == nil {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

// review reads the request and computes the answer; a nil review means
// an HTTP error was already written.
func (a *admission) review(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return nil, resultMalformed
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return nil, resultMalformed
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		return malformed(w, fmt.Sprintf("cannot read the request: %v", err)), resultMalformed
	}
	var in admissionv1.AdmissionReview
	if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &in); err != nil {
		return malformed(w, fmt.Sprintf("not an AdmissionReview: %v", err)), resultMalformed
	}
	switch {
	case in.APIVersion != admissionv1.SchemeGroupVersion.String() || in.Kind != "AdmissionReview":
		return malformed(w, fmt.Sprintf("want an admission.k8s.io/v1 AdmissionReview, got %s %s", in.APIVersion, in.Kind)), resultMalformed
	case in.Request == nil || in.Request.UID == "":
		return malformed(w, "the AdmissionReview has no request (or no request.uid)"), resultMalformed
	}
	req := in.Request
	out := &admissionv1.AdmissionReview{
		TypeMeta: in.TypeMeta,
		Response: &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true},
	}
	apiVersion := req.Kind.Version
	if req.Kind.Group != "" {
		apiVersion = req.Kind.Group + "/" + req.Kind.Version
	}
	name := req.Name
	if name == "" {
		name = "(generated)"
	}
	log := a.log.With("kind", req.Kind.Kind, "namespace", req.Namespace, "name", name, "uid", req.UID)
	if (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) || !inject.Supported(apiVersion, req.Kind.Kind) {
		return out, resultSkipped
	}
	if len(req.Object.Raw) == 0 {
		out.Response = deny(req.UID, http.StatusBadRequest, metav1.StatusReasonBadRequest, "request.object is empty")
		return out, resultMalformed
	}
	patch, outcome, err := a.sidecar.Patch(apiVersion, req.Kind.Kind, req.Object.Raw, a.scope)
	var ie *inject.Error
	switch {
	case errors.Is(err, inject.ErrMalformed):
		out.Response = deny(req.UID, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		log.Warn("malformed object", "error", err)
		return out, resultMalformed
	case errors.As(err, &ie) && ie.Policy == inject.FailurePolicyIgnore:
		out.Response.Warnings = []string{"tenantguard: sidecar not injected (failure policy ignore): " + err.Error()}
		log.Warn("not injected; admitted without a sidecar (failure policy ignore)", "error", err)
		return out, resultFailedOpen
	case err != nil:
		out.Response = deny(req.UID, http.StatusBadRequest, metav1.StatusReasonBadRequest,
			"tenantguard cannot inject its sidecar: "+err.Error()+" (annotate the pod tenantguard.io/inject: \"false\" to opt out)")
		log.Warn("injection refused", "error", err)
		return out, resultDenied
	case !outcome.Injected:
		log.Debug("not injected", "reason", outcome.Skipped)
		return out, resultSkipped
	}
	for _, w := range outcome.Warnings {
		out.Response.Warnings = append(out.Response.Warnings, "tenantguard: "+w)
	}
	if patch == nil {
		return out, resultUnchanged
	}
	pt := admissionv1.PatchTypeJSONPatch
	out.Response.Patch, out.Response.PatchType = patch, &pt
	log.Info("sidecar injected", "warnings", len(outcome.Warnings))
	return out, resultInjected
}

// deny refuses the object with a message the user sees as "admission
// webhook … denied the request: <msg>".
func deny(uid types.UID, code int32, reason metav1.StatusReason, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{UID: uid, Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg,
	}}
}

// malformed writes a 400 with an AdmissionReview that says what is wrong;
// it returns nil since the answer is written.
func malformed(w http.ResponseWriter, msg string) *admissionv1.AdmissionReview {
	review := &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest, Message: "tenantguard: " + msg,
		}},
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(review)
	return nil
}
