package injectorsvc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// apiServerClient trusts caPEM and checks the service's DNS name, as the
// API server does when it calls the webhook.
func apiServerClient(t *testing.T, caPEM []byte) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "tenantguard-injector.tenantguard.svc", MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// runService starts s and returns a function that stops it and returns
// Run's error.
func runService(t *testing.T, s *Service) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("Run did not return within 30s")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// TestServiceOverTLS: the injector with a certificate from files answers
// an AdmissionReview over TLS as the API server calls it, reports ready,
// counts the request, and on shutdown fails readiness while it keeps
// serving for the shutdown delay, then stops without leaking goroutines.
func TestServiceOverTLS(t *testing.T) {
	dir := t.TempDir()
	b, err := newBundle(nil, serviceNames("tenantguard-injector", "tenantguard"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.crt": b.cert, "tls.key": b.key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &config.Injector{WebhookListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		Sidecar: *testSidecar(), ShutdownDelay: 2 * time.Second, DrainTimeout: 5 * time.Second}
	s, err := start(context.Background(), cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := runService(t, s)
	admin := "http://" + s.AdminAddr()
	eventually(t, 10*time.Second, func() error {
		if code, _, err := get(admin + "/readyz"); err != nil || code != 200 {
			return fmt.Errorf("readyz %d %v", code, err)
		}
		return nil
	})
	client := apiServerClient(t, b.caCert)
	post := func() (*admissionv1.AdmissionReview, error) {
		resp, err := client.Post("https://"+s.WebhookAddr()+PathNamespace, "application/json", bytes.NewReader(reviewFor(t, testPod(nil, nil), "uid-tls")))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		obj, _, err := strictJSON.Decode(body, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%d %s: %v", resp.StatusCode, body, err)
		}
		return obj.(*admissionv1.AdmissionReview), nil
	}
	review, err := post()
	if err != nil {
		t.Fatal(err)
	}
	if r := review.Response; r.UID != "uid-tls" || !r.Allowed || len(r.Patch) == 0 {
		t.Fatalf("response %+v", r)
	}
	// The webhook settles on the hybrid key exchange, as every listener.
	tc, err := tls.Dial("tcp", s.WebhookAddr(), client.Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	if st := tc.ConnectionState(); st.CurveID != tls.X25519MLKEM768 {
		t.Errorf("the webhook negotiated %s", st.CurveID)
	}
	_ = tc.Close()
	_, metrics, err := get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`tenantguard_injector_requests_total{result="injected"} 1`, "tenantguard_injector_request_duration_seconds_count 1", "tenantguard_injector_certificate_expiry_timestamp_seconds "} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if got := s.Sidecar(); got.Image != testSidecar().Image || !got.Native {
		t.Errorf("sidecar %+v", got)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	eventually(t, 5*time.Second, func() error {
		if code, _, _ := get(admin + "/readyz"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d while shutting down", code)
		}
		return nil
	})
	if _, err := post(); err != nil {
		t.Fatalf("webhook stopped serving before the shutdown delay: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestServiceSelfManaged: with a self-managed certificate the injector
// creates it before it listens and serves it; with sidecar.native auto on
// a Kubernetes 1.28 API server it injects the fallback layout.
func TestServiceSelfManaged(t *testing.T) {
	f := newFakeAPI(t)
	f.put(webhookPath, testWebhookConfiguration())
	cfg := &config.Injector{WebhookListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		SelfManaged: &config.SelfManagedTLS{Secret: "tenantguard-injector-tls", Namespace: "tenantguard", Service: "tenantguard-injector", WebhookConfiguration: "tenantguard-injector"},
		Sidecar:     *testSidecar(), NativeAuto: true, DrainTimeout: 5 * time.Second}
	s, err := start(context.Background(), cfg, slog.New(slog.DiscardHandler), f.client())
	if err != nil {
		t.Fatal(err)
	}
	stop := runService(t, s)
	if s.Sidecar().Native {
		t.Fatal("native sidecars on a 1.28 API server")
	}
	bundles := caBundles(t, f)
	client := apiServerClient(t, bundles["pod.inject.tenantguard.io"])
	resp, err := client.Post("https://"+s.WebhookAddr()+PathAnnotation, "application/json",
		bytes.NewReader(reviewFor(t, testPod(map[string]string{inject.AnnotationInject: "true"}, nil), "uid-sm")))
	if err != nil {
		t.Fatalf("the API server cannot call the webhook with the caBundle it was given: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`"patch"`)) {
		t.Fatalf("no patch: %s", body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
