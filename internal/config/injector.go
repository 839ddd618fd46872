//go:build !sidecar

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tenantguard/tenantguard/internal/inject"
)

// InjectorFile is the injector's configuration file as written: the
// webhook's listeners and certificate, and the sidecar template that both
// the webhook and `tenantguard inject` use.
type InjectorFile struct {
	Listen struct {
		// Webhook serves AdmissionReview over TLS (/inject, /inject/namespace).
		Webhook string `yaml:"webhook"`
		// Admin serves /metrics, /healthz and /readyz over plain HTTP.
		Admin string `yaml:"admin"`
	} `yaml:"listen"`
	TLS struct {
		// CertFile and KeyFile: a certificate from elsewhere (cert-manager),
		// re-read when the files change.
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
		// SelfManaged: the injector keeps a CA and a serving certificate in
		// a Secret and the CA in its MutatingWebhookConfiguration's
		// caBundle, through the Kubernetes API.
		SelfManaged *struct {
			Secret               string `yaml:"secret"`
			Namespace            string `yaml:"namespace"` // default: the pod's own
			Service              string `yaml:"service"`
			WebhookConfiguration string `yaml:"webhook_configuration"`
		} `yaml:"self_managed"`
	} `yaml:"tls"`
	Sidecar SidecarTemplateFile `yaml:"sidecar"`
	// ShutdownDelay keeps the webhook serving this long after SIGTERM
	// (readiness already failing), while the Service's endpoints drop the
	// pod, so that the API server's calls do not find it gone.
	ShutdownDelay Duration `yaml:"shutdown_delay"`
	DrainTimeout  Duration `yaml:"drain_timeout"`
}

// SidecarTemplateFile is the `sidecar:` section: what every injection
// writes, before pods' annotations adjust it.
type SidecarTemplateFile struct {
	Image           string `yaml:"image"`
	ImagePullPolicy string `yaml:"image_pull_policy"`
	// Native: "auto" (ask the API server: native sidecars from Kubernetes
	// 1.29), "true" or "false".
	Native       string   `yaml:"native"`
	ConfigSecret string   `yaml:"config_secret"`
	Env          []string `yaml:"env"`
	Ports        struct {
		Postgres *int `yaml:"postgres"`
		Redis    *int `yaml:"redis"` // 0: no Redis listener
		Admin    *int `yaml:"admin"`
	} `yaml:"ports"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	RunAsUser     int64  `yaml:"run_as_user"`
	FailurePolicy string `yaml:"failure_policy"`
	// Certificates, if present, gives every injected sidecar its own
	// pod's certificate from cert-manager's csi-driver, for mTLS to the
	// control plane: spiffe://<trust_domain>/ns/<namespace>/pod/<name>,
	// mounted at /etc/tenantguard/certs (tls.crt, tls.key, ca.crt).
	Certificates *struct {
		Issuer      string `yaml:"issuer"`
		IssuerKind  string `yaml:"issuer_kind"`  // Issuer or ClusterIssuer (default)
		TrustDomain string `yaml:"trust_domain"` // default cluster.local
	} `yaml:"certificates"`
	ShutdownDelay  Duration `yaml:"shutdown_delay"`
	StartupTimeout Duration `yaml:"startup_timeout"`
}

// Injector is the compiled injector configuration.
type Injector struct {
	WebhookListen, AdminListen string
	// CertFile and KeyFile, or SelfManaged.
	CertFile, KeyFile string
	SelfManaged       *SelfManagedTLS
	// Sidecar is the injection template.
	Sidecar inject.Config
	// NativeAuto: Sidecar.Native is to be decided from the API server's
	// version at start.
	NativeAuto                  bool
	ShutdownDelay, DrainTimeout time.Duration
}

// SelfManagedTLS names the objects a self-managed certificate lives in.
type SelfManagedTLS struct {
	Secret, Namespace, Service, WebhookConfiguration string
}

// LoadInjector reads and validates the injector's configuration; version
// is the binary's, which names the default image.
func LoadInjector(path, version string) (*Injector, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return ParseInjector(path, data, version, true)
}

// ParseInjector validates configuration text; name is used in errors.
// With service false only the sidecar section is checked (the offline
// `tenantguard inject` reads the same file).
func ParseInjector(name string, data []byte, version string, service bool) (*Injector, error) {
	var f InjectorFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !(errors.Is(err, io.EOF) && !service) {
		return nil, &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	fail := func(field, format string, args ...any) (*Injector, error) {
		return nil, &Error{File: name, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	out := &Injector{WebhookListen: f.Listen.Webhook, AdminListen: f.Listen.Admin,
		ShutdownDelay: time.Duration(f.ShutdownDelay), DrainTimeout: time.Duration(f.DrainTimeout)}
	if out.DrainTimeout == 0 {
		out.DrainTimeout = 10 * time.Second
	}
	sc, auto, ferr := parseSidecarTemplate(&f.Sidecar, version)
	if ferr != nil {
		return fail(ferr.field, "%s", ferr.msg)
	}
	out.Sidecar, out.NativeAuto = sc, auto
	if !service {
		return out, nil
	}
	for _, a := range []struct{ field, addr string }{{"listen.webhook", f.Listen.Webhook}, {"listen.admin", f.Listen.Admin}} {
		if a.addr == "" {
			return fail(a.field, "required (host:port)")
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fail(a.field, "%q is not host:port: %v", a.addr, err)
		}
	}
	t := f.TLS
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return fail("tls", "cert_file and key_file must be given together")
	case t.CertFile != "" && t.SelfManaged != nil:
		return fail("tls", "give cert_file and key_file, or self_managed, not both")
	case t.CertFile != "":
		out.CertFile, out.KeyFile = resolve(filepath.Dir(name), t.CertFile), resolve(filepath.Dir(name), t.KeyFile)
	case t.SelfManaged != nil:
		sm := &SelfManagedTLS{Secret: t.SelfManaged.Secret, Namespace: t.SelfManaged.Namespace,
			Service: t.SelfManaged.Service, WebhookConfiguration: t.SelfManaged.WebhookConfiguration}
		for _, n := range []struct{ field, value string }{
			{"tls.self_managed.secret", sm.Secret},
			{"tls.self_managed.service", sm.Service},
			{"tls.self_managed.webhook_configuration", sm.WebhookConfiguration},
		} {
			if errs := validation.IsDNS1123Subdomain(n.value); len(errs) > 0 {
				return fail(n.field, "required, a Kubernetes object name: %s", strings.Join(errs, "; "))
			}
		}
		if sm.Namespace != "" {
			if errs := validation.IsDNS1123Label(sm.Namespace); len(errs) > 0 {
				return fail("tls.self_managed.namespace", "%s", strings.Join(errs, "; "))
			}
		}
		out.SelfManaged = sm
	default:
		return fail("tls", "required: cert_file and key_file, or self_managed")
	}
	return out, nil
}

// parseSidecarTemplate compiles the sidecar section over the defaults.
func parseSidecarTemplate(f *SidecarTemplateFile, version string) (inject.Config, bool, *fieldErr) {
	c := inject.DefaultConfig(version)
	if f.Image != "" {
		c.Image = f.Image
	}
	switch p := corev1.PullPolicy(f.ImagePullPolicy); p {
	case "":
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		c.ImagePullPolicy = p
	default:
		return c, false, &fieldErr{"sidecar.image_pull_policy", fmt.Sprintf("%q is not Always, IfNotPresent or Never", p)}
	}
	auto := false
	switch f.Native {
	case "", "auto":
		auto = true
	case "true":
		c.Native = true
	case "false":
		c.Native = false
	default:
		return c, false, &fieldErr{"sidecar.native", fmt.Sprintf("%q is not auto, true or false", f.Native)}
	}
	if f.ConfigSecret != "" {
		if errs := validation.IsDNS1123Subdomain(f.ConfigSecret); len(errs) > 0 {
			return c, false, &fieldErr{"sidecar.config_secret", strings.Join(errs, "; ")}
		}
		c.ConfigSecret = f.ConfigSecret
	}
	if f.Env != nil {
		c.Env = nil
		for i, e := range f.Env {
			if errs := validation.IsEnvVarName(e); len(errs) > 0 || e == inject.TenantEnv {
				return c, false, &fieldErr{fmt.Sprintf("sidecar.env[%d]", i), fmt.Sprintf("%q is not a variable the sidecar can take over", e)}
			}
			c.Env = append(c.Env, e)
		}
	}
	for _, p := range []struct {
		field string
		v     *int
		dst   *int32
	}{{"sidecar.ports.postgres", f.Ports.Postgres, &c.Ports.Postgres}, {"sidecar.ports.redis", f.Ports.Redis, &c.Ports.Redis}, {"sidecar.ports.admin", f.Ports.Admin, &c.Ports.Admin}} {
		if p.v == nil {
			continue
		}
		if *p.v < 0 || *p.v > 65535 {
			return c, false, &fieldErr{p.field, fmt.Sprintf("%d is not a port", *p.v)}
		}
		*p.dst = int32(*p.v)
	}
	for _, r := range []struct {
		field string
		in    map[string]string
		dst   *corev1.ResourceList
	}{{"sidecar.resources.requests", f.Resources.Requests, &c.Resources.Requests}, {"sidecar.resources.limits", f.Resources.Limits, &c.Resources.Limits}} {
		if r.in == nil {
			continue
		}
		*r.dst = corev1.ResourceList{}
		for k, v := range r.in {
			if k != "cpu" && k != "memory" {
				return c, false, &fieldErr{r.field + "." + k, "only cpu and memory"}
			}
			q, err := resource.ParseQuantity(v)
			if err != nil || q.Sign() <= 0 {
				return c, false, &fieldErr{r.field + "." + k, fmt.Sprintf("%q is not a positive quantity (e.g. 100m, 128Mi)", v)}
			}
			(*r.dst)[corev1.ResourceName(k)] = q
		}
	}
	if f.RunAsUser != 0 {
		c.RunAsUser = f.RunAsUser
	}
	if f.FailurePolicy != "" {
		c.FailurePolicy = inject.FailurePolicy(f.FailurePolicy)
	}
	if f.ShutdownDelay != 0 {
		c.ShutdownDelay = time.Duration(f.ShutdownDelay)
	}
	if f.StartupTimeout != 0 {
		c.StartupTimeout = time.Duration(f.StartupTimeout)
	}
	if cf := f.Certificates; cf != nil {
		cc := &inject.Certificates{Issuer: cf.Issuer, IssuerKind: cf.IssuerKind, TrustDomain: cf.TrustDomain}
		if cc.IssuerKind == "" {
			cc.IssuerKind = "ClusterIssuer"
		}
		if cc.TrustDomain == "" {
			cc.TrustDomain = inject.DefaultTrustDomain
		}
		switch {
		case cc.Issuer == "":
			return c, false, &fieldErr{"sidecar.certificates.issuer", "required: the cert-manager issuer of the sidecars' certificates"}
		case cc.IssuerKind != "Issuer" && cc.IssuerKind != "ClusterIssuer":
			return c, false, &fieldErr{"sidecar.certificates.issuer_kind", fmt.Sprintf("%q is not Issuer or ClusterIssuer", cc.IssuerKind)}
		case !validTrustDomain(cc.TrustDomain):
			return c, false, &fieldErr{"sidecar.certificates.trust_domain", fmt.Sprintf("%q is not a SPIFFE trust domain", cc.TrustDomain)}
		}
		c.Certificates = cc
	}
	if err := c.Validate(); err != nil {
		return c, false, &fieldErr{"sidecar", err.Error()}
	}
	return c, auto, nil
}
