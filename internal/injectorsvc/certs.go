package injectorsvc

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/kubeapi"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// certSource serves the webhook's certificate.
type certSource interface {
	// GetCertificate is tls.Config's.
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Ready reports whether the certificate is in place (for self-managed
	// ones: in the Secret and its CA in the webhook configuration).
	Ready() bool
	// notAfter is when the certificate served now expires; zero before
	// there is one.
	notAfter() time.Time
}

// fileCert is a certificate from files that another party renews
// (cert-manager, a mounted Secret), kept current by tlsconf as every
// listener's is: re-read when the files change, the one in use kept (and
// the failure logged) when the new pair does not load.
type fileCert struct{ *tlsconf.Server }

func newFileCert(certFile, keyFile string, opts tlsconf.Options) (*fileCert, error) {
	srv, err := tlsconf.NewServer(tlsconf.ServerFiles{CertFile: certFile, KeyFile: keyFile}, opts)
	if err != nil {
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	return &fileCert{srv}, nil
}

func (f *fileCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.Certificate(), nil
}

func (f *fileCert) Ready() bool { return true }

func (f *fileCert) notAfter() time.Time { return f.NotAfter() }

// selfManaged keeps the webhook's CA and serving certificate in a Secret,
// shared by every replica, and the CA in the caBundle of the webhook
// configuration's entries that call the service. The first replica to
// find the Secret missing creates it; one that finds it near expiry
// renews it with an update that fails if another replica changed it
// meanwhile (409), after which it takes the other's. Every sync is
// idempotent and runs at start and every syncEvery.
type selfManaged struct {
	api *kubeapi.Client
	cfg config.SelfManagedTLS // Namespace resolved
	log *slog.Logger
	now func() time.Time

	cert   atomic.Pointer[tls.Certificate]
	synced atomic.Bool
}

const syncEvery = 10 * time.Minute

func (m *selfManaged) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no webhook certificate yet")
}

func (m *selfManaged) Ready() bool { return m.synced.Load() }

func (m *selfManaged) notAfter() time.Time {
	if c := m.cert.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

func (m *selfManaged) secretPath() string {
	return fmt.Sprintf("/api/v1/namespaces/%s/secrets/%s", m.cfg.Namespace, m.cfg.Secret)
}

// sync makes the Secret hold a good bundle, serves it, and puts its CA in
// the webhook configuration.
func (m *selfManaged) sync(ctx context.Context) error {
	b, err := m.syncSecret(ctx)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(b.cert, b.key)
	if err != nil {
		return fmt.Errorf("secret %s: %w", m.cfg.Secret, err)
	}
	if old := m.cert.Swap(&pair); old == nil || !bytes.Equal(old.Certificate[0], pair.Certificate[0]) {
		m.log.Info("webhook certificate loaded", "secret", m.cfg.Secret, "expires", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := m.syncCABundle(ctx, b.caCert); err != nil {
		return err
	}
	m.synced.Store(true)
	return nil
}

func (m *selfManaged) syncSecret(ctx context.Context) (*bundle, error) {
	names := serviceNames(m.cfg.Service, m.cfg.Namespace)
	for attempt := 0; attempt < 3; attempt++ {
		var s corev1.Secret
		err := m.api.Do(ctx, http.MethodGet, m.secretPath(), "", nil, &s)
		switch {
		case kubeapi.IsNotFound(err):
			b, err := newBundle(nil, names, m.now())
			if err != nil {
				return nil, err
			}
			s := &corev1.Secret{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
				ObjectMeta: metav1.ObjectMeta{Name: m.cfg.Secret, Namespace: m.cfg.Namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "tenantguard-injector"}},
				Type:       corev1.SecretTypeTLS,
				Data:       b.data(),
			}
			err = m.api.Do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/namespaces/%s/secrets", m.cfg.Namespace), kubeapi.JSON, s, nil)
			if kubeapi.IsConflict(err) {
				continue // another replica created it first: use theirs
			}
			if err != nil {
				return nil, fmt.Errorf("create secret %s: %w", m.cfg.Secret, err)
			}
			m.log.Info("webhook CA and certificate created", "secret", m.cfg.Secret)
			return b, nil
		case err != nil:
			return nil, fmt.Errorf("get secret %s: %w", m.cfg.Secret, err)
		}
		b := bundleFrom(s.Data)
		_, why := b.check(names, m.now())
		if why == "" {
			return b, nil
		}
		nb, err := newBundle(b, names, m.now())
		if err != nil {
			return nil, err
		}
		s.Data = nb.data()
		s.Type = corev1.SecretTypeTLS
		// The update carries the resourceVersion read: it fails with 409
		// if another replica renewed the Secret meanwhile.
		err = m.api.Do(ctx, http.MethodPut, m.secretPath(), kubeapi.JSON, &s, nil)
		if kubeapi.IsConflict(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update secret %s: %w", m.cfg.Secret, err)
		}
		m.log.Info("webhook certificate renewed", "secret", m.cfg.Secret, "reason", why)
		return nb, nil
	}
	return nil, fmt.Errorf("secret %s keeps changing under us", m.cfg.Secret)
}

// syncCABundle sets the caBundle of every webhook in the configuration
// that calls our service. Each replace is guarded by a test of the
// webhook's name at that index, so a concurrent reordering fails the
// patch (retried at the next sync) instead of patching the wrong entry.
func (m *selfManaged) syncCABundle(ctx context.Context, ca []byte) error {
	path := "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/" + m.cfg.WebhookConfiguration
	var wc webhookConfiguration
	if err := m.api.Do(ctx, http.MethodGet, path, "", nil, &wc); err != nil {
		return fmt.Errorf("get mutatingwebhookconfiguration %s: %w", m.cfg.WebhookConfiguration, err)
	}
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	ours := 0
	for i, w := range wc.Webhooks {
		svc := w.ClientConfig.Service
		if svc == nil || svc.Name != m.cfg.Service || svc.Namespace != m.cfg.Namespace {
			continue
		}
		ours++
		if bytes.Equal(w.ClientConfig.CABundle, ca) {
			continue
		}
		p := fmt.Sprintf("/webhooks/%d", i)
		ops = append(ops, op{"test", p + "/name", w.Name}, op{"add", p + "/clientConfig/caBundle", base64.StdEncoding.EncodeToString(ca)})
	}
	if ours == 0 {
		return fmt.Errorf("no webhook of mutatingwebhookconfiguration %s calls service %s/%s", m.cfg.WebhookConfiguration, m.cfg.Namespace, m.cfg.Service)
	}
	if len(ops) == 0 {
		return nil
	}
	if err := m.api.Do(ctx, http.MethodPatch, path, kubeapi.JSONPatch, ops, nil); err != nil {
		return fmt.Errorf("patch the caBundle of mutatingwebhookconfiguration %s: %w", m.cfg.WebhookConfiguration, err)
	}
	m.log.Info("webhook caBundle set", "mutatingwebhookconfiguration", m.cfg.WebhookConfiguration, "webhooks", len(ops)/2)
	return nil
}

// webhookConfiguration is what syncCABundle reads of a
// MutatingWebhookConfiguration (the typed one would add a megabyte of
// generated code to the binary for four fields).
type webhookConfiguration struct {
	Webhooks []struct {
		Name         string `json:"name"`
		ClientConfig struct {
			Service *struct {
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
			} `json:"service"`
			CABundle []byte `json:"caBundle"`
		} `json:"clientConfig"`
	} `json:"webhooks"`
}

// run syncs every syncEvery until ctx ends.
func (m *selfManaged) run(ctx context.Context) {
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := m.sync(sctx); err != nil && ctx.Err() == nil {
				m.log.Error("webhook certificate sync failed; retrying later", "error", err)
			}
			cancel()
		}
	}
}
