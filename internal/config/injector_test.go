//go:build !sidecar

package config

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tenantguard/tenantguard/internal/inject"
)

const validInjector = `
listen:
  webhook: 0.0.0.0:9443
  admin: 0.0.0.0:9090
tls:
  self_managed:
    secret: tenantguard-injector-tls
    service: tenantguard-injector
    webhook_configuration: tenantguard-injector
sidecar:
  image: registry.example.com/tenantguard:1.2.3
  image_pull_policy: Always
  native: false
  config_secret: tg-sidecar
  env: [DATABASE_URL, CACHE_URL]
  ports: {postgres: 7432, redis: 0, admin: 9200}
  resources:
    requests: {cpu: 50m, memory: 32Mi}
    limits: {memory: 128Mi}
  failure_policy: ignore
  shutdown_delay: 3s
shutdown_delay: 2s
drain_timeout: 4s
`

func TestParseInjector(t *testing.T) {
	c, err := ParseInjector("injector.yaml", []byte(validInjector), "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sidecar
	if c.WebhookListen != "0.0.0.0:9443" || c.AdminListen != "0.0.0.0:9090" || c.DrainTimeout != 4*time.Second || c.ShutdownDelay != 2*time.Second {
		t.Errorf("listen %+v", c)
	}
	if c.SelfManaged == nil || c.SelfManaged.Secret != "tenantguard-injector-tls" || c.SelfManaged.Namespace != "" {
		t.Errorf("tls %+v", c.SelfManaged)
	}
	if s.Image != "registry.example.com/tenantguard:1.2.3" || s.ImagePullPolicy != corev1.PullAlways || s.Native || c.NativeAuto ||
		s.ConfigSecret != "tg-sidecar" || strings.Join(s.Env, ",") != "DATABASE_URL,CACHE_URL" ||
		s.Ports != (inject.Ports{Postgres: 7432, Redis: 0, Admin: 9200}) || s.FailurePolicy != inject.FailurePolicyIgnore ||
		s.ShutdownDelay != 3*time.Second || s.Version != "1.0.0" || s.RunAsUser != inject.DefaultRunAsUser {
		t.Errorf("sidecar %+v", s)
	}
	if q := s.Resources.Requests[corev1.ResourceCPU]; q.String() != "50m" {
		t.Errorf("cpu request %v", q.String())
	}
	if _, ok := s.Resources.Limits[corev1.ResourceCPU]; ok {
		t.Error("a cpu limit appeared")
	}

	// Defaults: native auto, the image of this version.
	d, err := ParseInjector("i.yaml", []byte("listen: {webhook: ':9443', admin: ':9090'}\ntls: {cert_file: tls.crt, key_file: tls.key}\n"), "2.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	if !d.NativeAuto || d.Sidecar.Image != inject.DefaultImageRepo+":2.0.0" || d.Sidecar.Ports.Redis != inject.DefaultRedisPort || d.CertFile != "tls.crt" {
		t.Errorf("defaults %+v", d)
	}
	// Certificates: the issuer given, the kind and trust domain defaulted.
	cd, err := ParseInjector("i.yaml", []byte("sidecar:\n  certificates: {issuer: tenantguard-ca}\n"), "2.0.0", false)
	if err != nil {
		t.Fatal(err)
	}
	if cc := cd.Sidecar.Certificates; cc == nil || *cc != (inject.Certificates{Issuer: "tenantguard-ca", IssuerKind: "ClusterIssuer", TrustDomain: "cluster.local"}) {
		t.Errorf("certificates %+v", cc)
	}
	for text, want := range map[string]string{
		"sidecar:\n  certificates: {issuer_kind: Issuer}\n":                    "sidecar.certificates.issuer: required",
		"sidecar:\n  certificates: {issuer: ca, issuer_kind: Secret}\n":        "sidecar.certificates.issuer_kind",
		"sidecar:\n  certificates: {issuer: ca, trust_domain: 'Bad Domain'}\n": "sidecar.certificates.trust_domain",
	} {
		if _, err := ParseInjector("i.yaml", []byte(text), "2.0.0", false); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
	// Offline: an empty file, or only a sidecar section, is enough.
	if _, err := ParseInjector("i.yaml", nil, "2.0.0", false); err != nil {
		t.Errorf("empty file offline: %v", err)
	}
}

func TestParseInjectorErrors(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"unknown field", "drain_timeout: 4s", "drain_timeot: 4s", "field drain_timeot not found"},
		{"no webhook listener", "  webhook: 0.0.0.0:9443\n", "", "listen.webhook: required"},
		{"unknown tls field", "  self_managed:", "  self_managed_x:", "field self_managed_x not found"},
		{"no tls", "tls:\n  self_managed:\n    secret: tenantguard-injector-tls\n    service: tenantguard-injector\n    webhook_configuration: tenantguard-injector\n", "", "tls: required"},
		{"both tls kinds", "tls:\n", "tls:\n  cert_file: a\n  key_file: b\n", "not both"},
		{"bad secret name", "secret: tenantguard-injector-tls", "secret: Bad_Name", "tls.self_managed.secret"},
		{"bad pull policy", "image_pull_policy: Always", "image_pull_policy: Sometimes", "sidecar.image_pull_policy"},
		{"bad native", "native: false", "native: maybe", "sidecar.native"},
		{"bad env", "env: [DATABASE_URL, CACHE_URL]", "env: [DATABASE_URL, TENANTGUARD_TENANT]", "sidecar.env[1]"},
		{"bad port", "postgres: 7432", "postgres: 70000", "sidecar.ports.postgres"},
		{"same ports", "admin: 9200", "admin: 7432", "ports must differ"},
		{"bad quantity", "cpu: 50m", "cpu: fast", "sidecar.resources.requests.cpu"},
		{"gpu", "limits: {memory: 128Mi}", "limits: {gpu: 1}", "only cpu and memory"},
		{"request above limit", "memory: 32Mi}", "memory: 1Gi}", "above its limit"},
		{"failure policy", "failure_policy: ignore", "failure_policy: maybe", "failure policy"},
		{"root", "failure_policy: ignore", "run_as_user: -1", "non-root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(validInjector, tc.from, tc.to, 1)
			if text == validInjector {
				t.Fatalf("%q not in the valid configuration", tc.from)
			}
			_, err := ParseInjector("injector.yaml", []byte(text), "1.0.0", true)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "injector.yaml: ") {
				t.Fatalf("err %v, want one naming injector.yaml and %q", err, tc.want)
			}
		})
	}
}

func TestNodeIDFromEnvironment(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "shop")
	t.Setenv("POD_NAME", "orders-7d9f")
	t.Setenv("EMPTY", "")
	for _, tc := range []struct{ in, want, err string }{
		{"${POD_NAMESPACE}/${POD_NAME}", "shop/orders-7d9f", ""},
		{"sidecar~${POD_NAME}", "sidecar~orders-7d9f", ""},
		{"literal-$x", "literal-$x", ""},
		{"${EMPTY}", "", "${EMPTY}: the variable is not set"},
		{"${NOT_SET_ANYWHERE_42}", "", "not set"},
		{"${POD NAME}", "", "not a variable name"},
		{"${POD_NAME", "", "without }"},
	} {
		got, err := expandEnv(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("expandEnv(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("expandEnv(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	cfg := strings.Replace(valid, "drain_timeout: 3s", "controlplane:\n  address: 127.0.0.1:18000\n  node_id: ${POD_NAMESPACE}/${POD_NAME}\ndrain_timeout: 3s", 1)
	sc, err := Parse("sidecar.yaml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if sc.ControlPlane.NodeID != "shop/orders-7d9f" {
		t.Errorf("node id %q", sc.ControlPlane.NodeID)
	}
	_, err = Parse("sidecar.yaml", []byte(strings.Replace(cfg, "${POD_NAME}", "${NO_SUCH_VAR_42}", 1)))
	if err == nil || !strings.Contains(err.Error(), "controlplane.node_id: ${NO_SUCH_VAR_42}") {
		t.Errorf("unset variable: %v", err)
	}
}
