package injectorsvc

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantguard/tenantguard/internal/inject"
)

// scheme knows the workload kinds, for strict decoding as the API server
// does it.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, admissionv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictJSON and strictYAML fail on unknown and duplicate fields.
var (
	strictJSON = k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme, scheme, k8sjson.SerializerOptions{Strict: true})
	strictYAML = k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme, scheme, k8sjson.SerializerOptions{Strict: true, Yaml: true})
)

func decodeStrict(t *testing.T, s runtime.Decoder, data []byte) runtime.Object {
	t.Helper()
	obj, _, err := s.Decode(data, nil, nil)
	if err != nil {
		t.Fatalf("strict decode: %v\n%s", err, data)
	}
	return obj
}

func testSidecar() *inject.Config {
	c := inject.DefaultConfig("1.0.0")
	return &c
}

func newHandler(scope inject.Scope) (*admission, *admissionMetrics) {
	m := newAdmissionMetrics(prometheus.NewRegistry())
	return &admission{sidecar: testSidecar(), scope: scope, log: slog.New(slog.DiscardHandler), m: m}, m
}

// reviewFor wraps obj (encoded as the API server encodes it) in an
// AdmissionReview v1 request for CREATE.
func reviewFor(t *testing.T, obj runtime.Object, uid string) []byte {
	t.Helper()
	gvks, _, err := scheme.ObjectKinds(obj)
	if err != nil {
		t.Fatal(err)
	}
	gvk := gvks[0]
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	raw, err := runtime.Encode(strictJSON, obj)
	if err != nil {
		t.Fatal(err)
	}
	meta := obj.(metav1.Object)
	gvr := schema.GroupVersionResource{Group: gvk.Group, Version: gvk.Version, Resource: strings.ToLower(gvk.Kind) + "s"}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID(uid),
			Kind:      metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
			Resource:  metav1.GroupVersionResource{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource},
			Name:      meta.GetName(),
			Namespace: meta.GetNamespace(),
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	b, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// call posts body to h and returns the HTTP status and the decoded review.
func call(t *testing.T, h http.Handler, body []byte) (int, *admissionv1.AdmissionReview) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, PathNamespace, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
		return rec.Code, nil
	}
	out := decodeStrict(t, strictJSON, rec.Body.Bytes())
	review, ok := out.(*admissionv1.AdmissionReview)
	if !ok || review.Response == nil {
		t.Fatalf("answer %T %s", out, rec.Body.Bytes())
	}
	return rec.Code, review
}

// admit sends obj through the webhook as the API server would, and
// returns the object the API server would store: the answer's JSON patch
// applied with the API server's JSON-patch library, decoded strictly.
func admit(t *testing.T, h http.Handler, obj runtime.Object) (runtime.Object, *admissionv1.AdmissionResponse) {
	t.Helper()
	body := reviewFor(t, obj, "uid-1")
	code, review := call(t, h, body)
	r := review.Response
	if code != http.StatusOK || r.UID != "uid-1" {
		t.Fatalf("status %d, uid %q", code, r.UID)
	}
	if !r.Allowed {
		return nil, r
	}
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &in); err != nil {
		t.Fatal(err)
	}
	raw := in.Request.Object.Raw
	if len(r.Patch) > 0 {
		if r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch type %v", r.PatchType)
		}
		p, err := jsonpatch.DecodePatch(r.Patch)
		if err != nil {
			t.Fatalf("the API server could not decode the patch: %v", err)
		}
		if raw, err = p.Apply(raw); err != nil {
			t.Fatalf("the API server could not apply the patch %s: %v", r.Patch, err)
		}
	}
	return decodeStrict(t, strictJSON, raw), r
}

const testdata = "../inject/testdata"

// TestWebhookGolden: for every workload kind, the object the API server
// would store after the webhook's patch equals the golden file, and
// equals what the offline `tenantguard inject` writes for it.
func TestWebhookGolden(t *testing.T) {
	h, _ := newHandler(inject.ScopeNamespace)
	for _, tc := range []struct{ name, in string }{
		{"pod", "pod.yaml"},
		{"deployment", "deployment.yaml"},
		{"statefulset", "statefulset.yaml"},
		{"daemonset", "daemonset.yaml"},
		{"job", "job.yaml"},
		{"cronjob", "cronjob.yaml"},
		{"fallback layout", "fallback.yaml"},
		{"opted out", "optout.yaml"},
		{"wrong version", "wrong-version.yaml"},
		{"already injected", "deployment.golden.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join(testdata, tc.in))
			if err != nil {
				t.Fatal(err)
			}
			goldenFile := strings.TrimSuffix(strings.TrimSuffix(tc.in, ".yaml"), ".golden") + ".golden.yaml"
			golden, err := os.ReadFile(filepath.Join(testdata, goldenFile))
			if err != nil {
				t.Fatal(err)
			}
			got, resp := admit(t, h, decodeStrict(t, strictYAML, in))
			if got == nil {
				t.Fatalf("refused: %+v", resp.Result)
			}
			want := decodeStrict(t, strictYAML, golden)
			if !apiequality.Semantic.DeepEqual(got, want) {
				t.Fatalf("webhook result differs from %s:\n%s", goldenFile, mustYAML(t, got))
			}
			var offline bytes.Buffer
			if _, err := testSidecar().Manifests(bytes.NewReader(in), &offline); err != nil {
				t.Fatal(err)
			}
			if o := decodeStrict(t, strictYAML, offline.Bytes()); !apiequality.Semantic.DeepEqual(got, o) {
				t.Fatalf("webhook and offline inject differ; offline:\n%s", offline.Bytes())
			}
			if tc.in == "deployment.golden.yaml" && len(resp.Patch) != 0 {
				t.Errorf("already injected, yet a patch: %s", resp.Patch)
			}
		})
	}
}

func mustYAML(t *testing.T, obj runtime.Object) []byte {
	var b bytes.Buffer
	if err := strictYAML.Encode(obj, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testPod(ann map[string]string, mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: ann},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1",
			Env: []corev1.EnvVar{{Name: "DATABASE_URL", Value: "postgres://acme:pw@db:5432/app"}}}}},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

// TestWebhookRefusals: a pod the sidecar cannot be injected into is
// refused with a message saying why, or, with failure policy ignore,
// admitted unchanged with a warning; never half-injected.
func TestWebhookRefusals(t *testing.T) {
	h, m := newHandler(inject.ScopeNamespace)
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	got, r := admit(t, h, testPod(nil, hostNet))
	if got != nil || r.Allowed || r.Result == nil || r.Result.Code != 400 || !strings.Contains(r.Result.Message, "hostNetwork") {
		t.Fatalf("hostNetwork pod: allowed %v, %+v", r.Allowed, r.Result)
	}
	pod := testPod(map[string]string{inject.AnnotationFailurePolicy: "ignore"}, hostNet)
	got, r = admit(t, h, pod)
	if got == nil || len(r.Patch) != 0 || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "not injected") {
		t.Fatalf("failure policy ignore: patch %s, warnings %q", r.Patch, r.Warnings)
	}
	if !apiequality.Semantic.DeepEqual(got, pod) {
		t.Fatal("a pod admitted without injection was changed")
	}
	if n := testutilValue(t, m, resultDenied); n != 1 {
		t.Errorf("denied = %v", n)
	}
	if n := testutilValue(t, m, resultFailedOpen); n != 1 {
		t.Errorf("failed_open = %v", n)
	}
}

// TestWebhookScope: /inject (pods of namespaces without the label) injects
// only annotated pods; /inject/namespace every pod not opted out.
func TestWebhookScope(t *testing.T) {
	byAnn, _ := newHandler(inject.ScopeAnnotation)
	byNS, _ := newHandler(inject.ScopeNamespace)
	for _, tc := range []struct {
		name   string
		h      http.Handler
		ann    map[string]string
		inject bool
	}{
		{"annotation path, plain pod", byAnn, nil, false},
		{"annotation path, opted in", byAnn, map[string]string{inject.AnnotationInject: "true"}, true},
		{"namespace path, plain pod", byNS, nil, true},
		{"namespace path, opted out", byNS, map[string]string{inject.AnnotationInject: "false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r := admit(t, tc.h, testPod(tc.ann, nil))
			if !r.Allowed || (len(r.Patch) > 0) != tc.inject {
				t.Fatalf("allowed %v, patch %s; want injected=%v", r.Allowed, r.Patch, tc.inject)
			}
		})
	}
}

// TestWebhookMalformed: requests the webhook cannot read get a 400 with
// an AdmissionReview saying what is wrong (its UID when there is one);
// objects that do not decode as their kind are refused.
func TestWebhookMalformed(t *testing.T) {
	h, m := newHandler(inject.ScopeNamespace)
	valid := reviewFor(t, testPod(nil, nil), "uid-9")
	withObject := func(obj string) []byte {
		return bytes.Replace(valid, []byte(`"object":{`), []byte(`"object":`+obj+`,"oldObject":{`), 1)
	}
	for _, tc := range []struct {
		name string
		body []byte
		code int
		uid  string
		want string
	}{
		{"not JSON", []byte("<xml/>"), 400, "", "not an AdmissionReview"},
		{"v1beta1", bytes.Replace(valid, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1), 400, "", "want an admission.k8s.io/v1 AdmissionReview"},
		{"no request", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 400, "", "no request"},
		{"empty object", withObject("null"), 200, "uid-9", "request.object is empty"},
		{"containers not a list", withObject(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":"app"}}`), 200, "uid-9", "malformed object"},
		{"duplicate field", withObject(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","name":"y"},"spec":{"containers":[{"name":"a"}]}}`), 200, "uid-9", "duplicate field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, review := call(t, h, tc.body)
			r := review.Response
			if code != tc.code || r.Allowed || r.UID != types.UID(tc.uid) || r.Result == nil || !strings.Contains(r.Result.Message, tc.want) || len(r.Patch) != 0 {
				t.Fatalf("status %d, uid %q, allowed %v, result %+v; want %d, %q, a refusal with %q", code, r.UID, r.Allowed, r.Result, tc.code, tc.uid, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name, method, ct string
		code             int
	}{{"GET", http.MethodGet, "application/json", 405}, {"form", http.MethodPost, "application/x-www-form-urlencoded", 415}} {
		req := httptest.NewRequest(tc.method, PathNamespace, bytes.NewReader(valid))
		req.Header.Set("Content-Type", tc.ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, rec.Code, tc.code)
		}
	}
	if n := testutilValue(t, m, resultMalformed); n != 8 {
		t.Errorf("malformed = %v, want 8", n)
	}
	// Another kind, or a DELETE, passes without a patch.
	other := bytes.Replace(valid, []byte(`"kind":"Pod"`), []byte(`"kind":"Service"`), 1)
	if _, review := call(t, h, other); !review.Response.Allowed || len(review.Response.Patch) != 0 {
		t.Fatalf("a Service: %+v", review.Response)
	}
}

// testutilValue reads one result counter.
func testutilValue(t *testing.T, m *admissionMetrics, result string) float64 {
	t.Helper()
	return testutil.ToFloat64(m.requests.WithLabelValues(result))
}
