package injectorsvc

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/kubeapi"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// fakeAPI is the part of an API server the injector talks to: objects
// stored as JSON with a resourceVersion, optimistic concurrency on
// update, JSON patch applied with the API server's library and the result
// decoded strictly, and a bearer token.
type fakeAPI struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	objs   map[string][]byte // path → JSON
	rv     int
	calls  []string         // "METHOD path"
	inject map[string][]int // "METHOD path" → status codes to answer next
	// onPut runs before an update is stored (a concurrent writer).
	onPut func()
}

const (
	fakeToken   = "fake-service-account-token"
	secretPath  = "/api/v1/namespaces/tenantguard/secrets/tenantguard-injector-tls"
	webhookPath = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tenantguard-injector"
)

var admissionScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = admissionregistrationv1.AddToScheme(s)
	return s
}()

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, objs: map[string][]byte{}, inject: map[string][]int{}}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) client() *kubeapi.Client { return kubeapi.New(f.srv.URL, fakeToken, f.srv.Client()) }

func (f *fakeAPI) status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}

func (f *fakeAPI) put(path string, obj runtime.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	obj.(metav1.Object).SetResourceVersion(strconv.Itoa(f.rv))
	b, err := json.Marshal(obj)
	if err != nil {
		f.t.Fatal(err)
	}
	f.objs[path] = b
}

func (f *fakeAPI) get(path string, into any) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objs[path]
	if ok {
		if err := json.Unmarshal(b, into); err != nil {
			f.t.Fatal(err)
		}
	}
	return ok
}

func (f *fakeAPI) count(call string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == call {
			n++
		}
	}
	return n
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+fakeToken {
		f.status(w, 401, metav1.StatusReasonUnauthorized, "no token")
		return
	}
	call := r.Method + " " + r.URL.Path
	body, _ := io.ReadAll(r.Body)
	var onPut func()
	f.mu.Lock()
	f.calls = append(f.calls, call)
	if codes := f.inject[call]; len(codes) > 0 {
		f.inject[call] = codes[1:]
		f.mu.Unlock()
		f.status(w, codes[0], metav1.StatusReasonForbidden, "injected failure")
		return
	}
	if r.Method == http.MethodPut {
		onPut, f.onPut = f.onPut, nil
	}
	f.mu.Unlock()
	if onPut != nil {
		onPut()
	}
	if r.URL.Path == "/version" {
		_, _ = w.Write([]byte(`{"major":"1","minor":"28+","gitVersion":"v1.28.3"}`))
		return
	}
	strict := k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, admissionScheme, admissionScheme, k8sjson.SerializerOptions{Strict: true})
	f.mu.Lock()
	stored, exists := f.objs[r.URL.Path]
	f.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		if !exists {
			f.status(w, 404, metav1.StatusReasonNotFound, r.URL.Path+" not found")
			return
		}
		_, _ = w.Write(stored)
	case http.MethodPost:
		obj, _, err := strict.Decode(body, nil, nil)
		if err != nil {
			f.status(w, 400, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		path := r.URL.Path + "/" + obj.(metav1.Object).GetName()
		f.mu.Lock()
		_, taken := f.objs[path]
		f.mu.Unlock()
		if taken {
			f.status(w, 409, metav1.StatusReasonAlreadyExists, "already exists")
			return
		}
		f.put(path, obj)
		w.WriteHeader(201)
	case http.MethodPut:
		obj, _, err := strict.Decode(body, nil, nil)
		if err != nil || !exists {
			f.status(w, 400, metav1.StatusReasonBadRequest, fmt.Sprint(err))
			return
		}
		var cur metav1.PartialObjectMetadata
		_ = json.Unmarshal(stored, &cur)
		if obj.(metav1.Object).GetResourceVersion() != cur.ResourceVersion {
			f.status(w, 409, metav1.StatusReasonConflict, "the object has been modified")
			return
		}
		f.put(r.URL.Path, obj)
	case http.MethodPatch:
		if r.Header.Get("Content-Type") != kubeapi.JSONPatch || !exists {
			f.status(w, 415, metav1.StatusReasonUnsupportedMediaType, "json patch only")
			return
		}
		p, err := jsonpatch.DecodePatch(body)
		if err == nil {
			stored, err = p.Apply(stored)
		}
		if err != nil {
			f.status(w, 422, metav1.StatusReasonInvalid, err.Error())
			return
		}
		obj, _, err := strict.Decode(stored, nil, nil)
		if err != nil {
			f.status(w, 422, metav1.StatusReasonInvalid, err.Error())
			return
		}
		f.put(r.URL.Path, obj)
	}
}

// testWebhookConfiguration is what the manifests install: two webhooks that
// call the injector (no caBundle yet), and one of another product.
func testWebhookConfiguration() *admissionregistrationv1.MutatingWebhookConfiguration {
	svc := func(name string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: "tenantguard", Name: name}}
	}
	none := admissionregistrationv1.SideEffectClassNone
	wh := func(name string, cc admissionregistrationv1.WebhookClientConfig) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{Name: name, ClientConfig: cc, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}
	}
	other := svc("someone-else")
	other.CABundle = []byte("other CA")
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: "tenantguard-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			wh("namespace.inject.tenantguard.io", svc("tenantguard-injector")),
			wh("other.example.com", other),
			wh("pod.inject.tenantguard.io", svc("tenantguard-injector")),
		},
	}
}

func newManaged(f *fakeAPI, now time.Time) *selfManaged {
	return &selfManaged{api: f.client(), log: slog.New(slog.DiscardHandler), now: func() time.Time { return now },
		cfg: config.SelfManagedTLS{Secret: "tenantguard-injector-tls", Namespace: "tenantguard", Service: "tenantguard-injector", WebhookConfiguration: "tenantguard-injector"}}
}

// verifyServing checks what the API server checks: the served certificate
// verifies against the caBundle for the service's DNS name.
func verifyServing(t *testing.T, m *selfManaged, caBundle []byte) *x509.Certificate {
	t.Helper()
	c, err := m.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) {
		t.Fatalf("caBundle holds no certificate: %q", caBundle)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "tenantguard-injector.tenantguard.svc", CurrentTime: m.now()}); err != nil {
		t.Fatalf("the served certificate does not verify against the caBundle: %v", err)
	}
	return leaf
}

func caBundles(t *testing.T, f *fakeAPI) map[string][]byte {
	t.Helper()
	var wc admissionregistrationv1.MutatingWebhookConfiguration
	if !f.get(webhookPath, &wc) {
		t.Fatal("webhook configuration gone")
	}
	out := map[string][]byte{}
	for _, w := range wc.Webhooks {
		out[w.Name] = w.ClientConfig.CABundle
	}
	return out
}

// TestSelfManaged: on an empty cluster the first replica creates the CA
// and certificate and sets the caBundle of its webhooks only; a second
// replica reuses them; near expiry the certificate is renewed under the
// same CA; a concurrent renewal (409) is taken over; an RBAC refusal keeps
// the injector unready.
func TestSelfManaged(t *testing.T) {
	ctx := context.Background()
	f := newFakeAPI(t)
	f.put(webhookPath, testWebhookConfiguration())
	now := time.Now()

	first := newManaged(f, now)
	if first.Ready() {
		t.Fatal("ready before the first sync")
	}
	if err := first.sync(ctx); err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if !f.get(secretPath, &s) || s.Type != corev1.SecretTypeTLS {
		t.Fatalf("secret %+v", s)
	}
	bundles := caBundles(t, f)
	if string(bundles["other.example.com"]) != "other CA" {
		t.Error("another product's webhook was changed")
	}
	for _, n := range []string{"namespace.inject.tenantguard.io", "pod.inject.tenantguard.io"} {
		if string(bundles[n]) != string(s.Data["ca.crt"]) {
			t.Errorf("%s caBundle not set to the CA", n)
		}
	}
	leaf1 := verifyServing(t, first, s.Data["ca.crt"])
	if !first.Ready() {
		t.Fatal("not ready after a sync")
	}

	second := newManaged(f, now)
	patches := f.count("PATCH " + webhookPath)
	if err := second.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if leaf2 := verifyServing(t, second, s.Data["ca.crt"]); !leaf2.Equal(leaf1) {
		t.Error("a second replica made its own certificate")
	}
	if f.count("PATCH "+webhookPath) != patches || f.count("POST /api/v1/namespaces/tenantguard/secrets") != 1 {
		t.Errorf("calls %v", f.calls)
	}

	// 340 days on: the serving certificate is renewed, the CA kept.
	later := newManaged(f, now.Add(340*24*time.Hour))
	if err := later.sync(ctx); err != nil {
		t.Fatal(err)
	}
	var renewed corev1.Secret
	f.get(secretPath, &renewed)
	if string(renewed.Data["ca.crt"]) != string(s.Data["ca.crt"]) || string(renewed.Data["tls.crt"]) == string(s.Data["tls.crt"]) {
		t.Fatal("renewal: want a new serving certificate under the same CA")
	}
	if leaf := verifyServing(t, later, renewed.Data["ca.crt"]); !leaf.NotAfter.After(leaf1.NotAfter) {
		t.Errorf("renewed certificate expires %v, before the old one's %v", leaf.NotAfter, leaf1.NotAfter)
	}

	// Two replicas renew at once: the update of the slower one fails with
	// 409 and it serves the other's certificate.
	evenLater := now.Add(2 * 340 * 24 * time.Hour)
	slow, fast := newManaged(f, evenLater), newManaged(f, evenLater)
	f.onPut = func() {
		if err := fast.sync(ctx); err != nil {
			t.Error(err)
		}
	}
	if err := slow.sync(ctx); err != nil {
		t.Fatal(err)
	}
	var final corev1.Secret
	f.get(secretPath, &final)
	slowCert, _ := slow.GetCertificate(nil)
	fastCert, _ := fast.GetCertificate(nil)
	if string(slowCert.Certificate[0]) != string(fastCert.Certificate[0]) {
		t.Fatal("after a concurrent renewal the replicas serve different certificates")
	}
	verifyServing(t, slow, final.Data["ca.crt"])

	// No permission to patch the webhook configuration: an error, unready.
	f2 := newFakeAPI(t)
	f2.put(webhookPath, testWebhookConfiguration())
	f2.inject["PATCH "+webhookPath] = []int{403}
	denied := newManaged(f2, now)
	if err := denied.sync(ctx); err == nil || !strings.Contains(err.Error(), "403") || denied.Ready() {
		t.Fatalf("sync with a 403: %v, ready %v", err, denied.Ready())
	}
	// A configuration with no webhook calling the service is an error too.
	wc := testWebhookConfiguration()
	wc.Webhooks = wc.Webhooks[1:2]
	f2.put(webhookPath, wc)
	if err := newManaged(f2, now).sync(ctx); err == nil || !strings.Contains(err.Error(), "no webhook") {
		t.Fatalf("no webhook of ours: %v", err)
	}
}

// TestSelfManagedRepairs: a Secret with a broken or foreign bundle is
// replaced by a good one.
func TestSelfManagedRepairs(t *testing.T) {
	f := newFakeAPI(t)
	f.put(webhookPath, testWebhookConfiguration())
	f.put(secretPath, &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "tenantguard-injector-tls", Namespace: "tenantguard"},
		Data:       map[string][]byte{"tls.crt": []byte("junk"), "tls.key": []byte("junk")},
	})
	m := newManaged(f, time.Now())
	if err := m.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	f.get(secretPath, &s)
	verifyServing(t, m, s.Data["ca.crt"])
}

// TestFileCertReload: a certificate from files is reloaded when they
// change; a broken replacement keeps the one in use.
func TestFileCertReload(t *testing.T) {
	dir := t.TempDir()
	write := func(b *bundle, mtime time.Time) {
		for name, data := range map[string][]byte{"tls.crt": b.cert, "tls.key": b.key} {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	names := serviceNames("tenantguard-injector", "tenantguard")
	b1, err := newBundle(nil, names, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write(b1, time.Now().Add(-time.Hour))
	// Checked at every handshake.
	fc, err := newFileCert(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), tlsconf.Options{CheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := fc.GetCertificate(nil)
	b2, err := newBundle(b1, names, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write(b2, time.Now())
	c2, _ := fc.GetCertificate(nil)
	if string(c1.Certificate[0]) == string(c2.Certificate[0]) {
		t.Fatal("not reloaded")
	}
	if !fc.notAfter().Equal(c2.Leaf.NotAfter) {
		t.Fatalf("expiry %v, want the new certificate's %v", fc.notAfter(), c2.Leaf.NotAfter)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	c3, _ := fc.GetCertificate(nil)
	if string(c3.Certificate[0]) != string(c2.Certificate[0]) {
		t.Fatal("a broken file replaced the certificate in use")
	}
}
