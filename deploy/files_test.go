// Package deploy_test checks what deploy/ holds: every Kubernetes manifest
// decoded strictly into its typed object, the kustomize base and overlays
// rendered, every tenantguard configuration template read by the loader
// the processes use, the Envoy bootstrap and the resources the control
// plane serves validated with go-control-plane, and every PromQL
// expression parsed with Prometheus' own parser.
package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	apiyaml "k8s.io/apimachinery/pkg/util/yaml"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/tenantguard/tenantguard/controlplane/store/auditkey"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/procs"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/deploycheck"
	"github.com/tenantguard/tenantguard/test/harness"
)

// scheme knows every kind deploy/ uses; an unknown kind fails to decode.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme, rbacv1.AddToScheme, admissionregistrationv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strict decodes YAML into typed objects and fails on unknown or
// duplicate fields, as `kubectl apply --validate=strict` does.
var strict = k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme, scheme, k8sjson.SerializerOptions{Yaml: true, Strict: true})

// decodeObjects decodes every document of a manifest strictly.
func decodeObjects(t *testing.T, data []byte) []runtime.Object {
	t.Helper()
	r := apiyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if js, err := yaml.YAMLToJSON(doc); err != nil || string(bytes.TrimSpace(js)) == "null" {
			continue
		}
		obj, _, err := strict.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("strict decode: %v\n%s", err, doc)
		}
		out = append(out, obj)
	}
}

// checkers check the files of deploy/ by path (relative, slash-separated);
// the first match wins. A file no checker claims fails the test, so a new
// file cannot go unchecked.
var checkers = []struct {
	match func(path string) bool
	check func(t *testing.T, path string, data []byte)
}{
	{func(p string) bool {
		return strings.HasSuffix(p, ".go") || strings.HasPrefix(filepath.Base(p), "Dockerfile")
	}, nil},
	{func(p string) bool { return p == "README.md" }, nil}, // TestRunbooks
	{func(p string) bool { return filepath.Base(p) == "kustomization.yaml" }, checkKustomization},
	{func(p string) bool { return p == "kubernetes/config/controlplane.yaml" }, checkControlPlaneConfig},
	{func(p string) bool { return p == "kubernetes/config/extauthz.yaml" }, checkExtAuthzConfig},
	{func(p string) bool { return p == "kubernetes/config/sidecar.yaml" }, checkSidecarConfig},
	{func(p string) bool { return p == "kubernetes/config/gateway.yaml" }, checkGatewayConfig},
	{func(p string) bool { return p == "kubernetes/config/policy.yaml" }, checkPolicy},
	{func(p string) bool { return strings.HasPrefix(p, "kubernetes/certs/") }, checkCertManager},
	{func(p string) bool { return p == "kubernetes/base/injector/injector.yaml" }, checkInjectorConfig},
	{func(p string) bool { return p == "envoy/envoy.yaml" }, func(t *testing.T, _ string, data []byte) { bootstrap(t, data) }},
	{func(p string) bool { return p == "prometheus/alerts.yaml" }, func(t *testing.T, path string, _ []byte) {
		if _, err := deploycheck.ReadRules(path); err != nil {
			t.Fatal(err)
		}
	}},
	{func(p string) bool { return p == "prometheus/scrape.yaml" }, checkScrapeConfig},
	{func(p string) bool { return strings.HasPrefix(p, "grafana/") && strings.HasSuffix(p, ".json") }, func(t *testing.T, path string, _ []byte) {
		if _, err := deploycheck.ReadDashboard(path); err != nil {
			t.Fatal(err)
		}
	}},
	{func(p string) bool { return strings.HasSuffix(p, ".yaml") }, func(t *testing.T, _ string, data []byte) {
		if len(decodeObjects(t, data)) == 0 {
			t.Fatal("no Kubernetes object in the file")
		}
	}},
}

// TestEveryFile runs each file of deploy/ through its checker.
func TestEveryFile(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := filepath.ToSlash(path)
		for _, c := range checkers {
			if !c.match(rel) {
				continue
			}
			if c.check != nil {
				t.Run(rel, func(t *testing.T) {
					data, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					c.check(t, path, data)
				})
			}
			return nil
		}
		t.Errorf("%s: no test checks this file: add a checker", rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkKustomization(t *testing.T, _ string, data []byte) {
	var k kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != kusttypes.KustomizationKind || k.APIVersion != kusttypes.KustomizationVersion {
		t.Fatalf("%s %s", k.APIVersion, k.Kind)
	}
}

// certMounts are the directories the templates name certificates in,
// each a csi-driver volume's mount: tls.crt, tls.key and ca.crt.
var certMounts = []string{"/etc/tenantguard/tls/", "/etc/tenantguard/certs/"}

// withFiles copies a configuration template into a temporary directory
// next to stand-ins for the files it names (tokens, keys, the seed), as
// its Secret would hold them, and returns the template's path there.
// Certificates the template names under certMounts are issued into
// directories of their own, and the template's paths rewritten to them.
func withFiles(t *testing.T, name string, data []byte, extra map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	ca := harness.NewCA(t, "deploy test CA")
	for i, m := range certMounts {
		if !bytes.Contains(data, []byte(m)) {
			continue
		}
		certDir := filepath.Join(dir, fmt.Sprintf("mount-%d", i))
		if err := os.Mkdir(certDir, 0o700); err != nil {
			t.Fatal(err)
		}
		ca.Issue(t, certDir, "tls", harness.ServerSpec("deploy-test"))
		b, err := os.ReadFile(ca.File)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte(m), []byte(certDir+"/"))
	}
	auditKey, err := auditkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		name:          data,
		"admin.token": []byte("admin-token-0123456789abcdef"),
		"audit.key":   auditKey.MarshalPEM(),
	}
	for k, v := range extra {
		files[k] = v
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("POD_NAME", "tenantguard-extauthz-7d9f-x2k4")
	t.Setenv("POD_NAMESPACE", "tenantguard")
	return filepath.Join(dir, name)
}

func checkControlPlaneConfig(t *testing.T, _ string, data []byte) {
	policy, err := os.ReadFile("kubernetes/config/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadControlPlane(withFiles(t, "controlplane.yaml", data, map[string][]byte{"policy.yaml": policy}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.XDSTLS == nil || cfg.XDSTLS.ClientCAFile == "" || cfg.XDSTrustDomain == "" || cfg.Envoy == nil || cfg.Envoy.ExtAuthzTLS == nil ||
		cfg.Seed == "" || cfg.Audit.SigningKey == nil || cfg.Audit.SignedFrom != 1 {
		t.Fatalf("the template should serve xDS over TLS to data planes with client certificates, seed the policy, serve Envoy (calling ext_authz over TLS) and sign the audit trail from its start: %+v", cfg)
	}
}

func checkExtAuthzConfig(t *testing.T, _ string, data []byte) {
	k, err := token.GenerateKey("template")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadExtAuthz(withFiles(t, "extauthz.yaml", data, map[string][]byte{"signing.key.pem": k.MarshalPEM()}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ControlPlane == nil || cfg.ControlPlane.NodeID != "tenantguard/tenantguard-extauthz-7d9f-x2k4" || cfg.ControlPlane.TLS == nil || cfg.ControlPlane.TLS.CertFile == "" {
		t.Fatalf("the template should take its policy from the control plane with its pod's certificate: %+v", cfg.ControlPlane)
	}
	if cfg.GRPCTLS == nil {
		t.Fatal("the template should serve Envoy's checks over TLS")
	}
}

func checkSidecarConfig(t *testing.T, _ string, data []byte) {
	cfg, err := config.Load(withFiles(t, "sidecar.yaml", data, nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ControlPlane == nil || cfg.ControlPlane.TLS == nil || cfg.ControlPlane.TLS.CertFile == "" || cfg.Postgres.Binder == nil {
		t.Fatalf("the template should take its policy from the control plane with its pod's certificate, isolation on: %+v", cfg)
	}
}

// checkGatewayConfig: the gateway's configuration loads as the sidecar's
// does, listening on the pod's IP with TLS and a per-source cap.
func checkGatewayConfig(t *testing.T, _ string, data []byte) {
	t.Setenv("POD_IP", "10.244.1.17")
	cfg, err := config.Load(withFiles(t, "sidecar.yaml", data, nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PostgresListen != "10.244.1.17:6432" || cfg.TLS == nil || cfg.Postgres.MaxClientConnsPerSource == 0 ||
		cfg.ControlPlane == nil || cfg.ControlPlane.TLS == nil || cfg.Postgres.Binder == nil || cfg.Procs != procs.Auto {
		t.Fatalf("the gateway template should listen on the pod IP with TLS, cap clients per source, take its policy from the control plane, isolation on, and use the pod's CPUs (procs: auto): %+v", cfg)
	}
}

func checkPolicy(t *testing.T, _ string, data []byte) {
	p, err := policypb.ParseYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.GetTenants()) == 0 || len(p.GetTables()) == 0 {
		t.Fatalf("policy %v", p)
	}
}

func checkInjectorConfig(t *testing.T, _ string, data []byte) {
	if _, err := config.ParseInjector("injector.yaml", data, "0.1.0", true); err != nil {
		t.Fatal(err)
	}
}

// checkScrapeConfig decodes the scrape jobs with the fields it uses.
func checkScrapeConfig(t *testing.T, _ string, data []byte) {
	var sc struct {
		ScrapeConfigs []struct {
			JobName             string `json:"job_name"`
			KubernetesSDConfigs []struct {
				Role       string `json:"role"`
				Namespaces *struct {
					Names []string `json:"names"`
				} `json:"namespaces"`
			} `json:"kubernetes_sd_configs"`
			RelabelConfigs []struct {
				SourceLabels []string `json:"source_labels"`
				Regex        string   `json:"regex"`
				Action       string   `json:"action"`
				TargetLabel  string   `json:"target_label"`
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.UnmarshalStrict(data, &sc); err != nil {
		t.Fatal(err)
	}
	jobs := map[string]bool{}
	for _, j := range sc.ScrapeConfigs {
		jobs[j.JobName] = true
	}
	for _, want := range []string{"tenantguard-sidecar", "tenantguard-controlplane", "tenantguard-extauthz", "tenantguard-injector"} {
		if !jobs[want] {
			t.Errorf("no scrape job %s (the dashboards select on it)", want)
		}
	}
}
