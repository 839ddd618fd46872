package inject_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tenantguard/tenantguard/internal/inject"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// testConfig is the sidecar template the golden files were made with.
func testConfig() *inject.Config {
	c := inject.DefaultConfig("1.0.0")
	return &c
}

// oldConfig is an earlier injector: another version, the fallback layout.
func oldConfig() *inject.Config {
	c := inject.DefaultConfig("0.9.0")
	c.Native = false
	c.Ports.Admin = 9100
	return &c
}

// GoldenCases are the manifests under testdata and their golden outputs;
// the webhook's tests use them too.
var goldenCases = []struct{ name, in string }{
	{"pod", "pod.yaml"},
	{"deployment", "deployment.yaml"},
	{"statefulset", "statefulset.yaml"},
	{"daemonset (tenant from a label)", "daemonset.yaml"},
	{"job (annotations)", "job.yaml"},
	{"cronjob", "cronjob.yaml"},
	{"fallback layout", "fallback.yaml"},
	{"opted out", "optout.yaml"},
	{"several documents", "mixed.yaml"},
	{"list", "list.yaml"},
	{"wrong version", "wrong-version.yaml"},
}

func golden(in string) string { return strings.TrimSuffix(in, ".yaml") + ".golden.yaml" }

func injectFile(t *testing.T, c *inject.Config, path string) ([]byte, []inject.DocumentReport) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	reports, err := c.Manifests(f, &out)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out.Bytes(), reports
}

// TestGolden: each manifest injected offline equals its golden file;
// injecting the result again changes nothing.
func TestGolden(t *testing.T) {
	if *update {
		// wrong-version.yaml is deployment.yaml injected by an older
		// injector, in the fallback layout.
		out, _ := injectFile(t, oldConfig(), filepath.Join("testdata", "deployment.yaml"))
		if err := os.WriteFile(filepath.Join("testdata", "wrong-version.yaml"), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := injectFile(t, testConfig(), filepath.Join("testdata", tc.in))
			gp := filepath.Join("testdata", golden(tc.in))
			if *update {
				if err := os.WriteFile(gp, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(gp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("output differs from %s (go test -update to accept):\n%s", gp, out)
			}
			again, _ := injectFile(t, testConfig(), gp)
			if !bytes.Equal(again, want) {
				t.Fatalf("injecting %s again changed it:\n%s", gp, again)
			}
		})
	}
}

// TestUntouched: opted-out workloads and other kinds come back byte for
// byte, comments included.
func TestUntouched(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "optout.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, reports := injectFile(t, testConfig(), filepath.Join("testdata", "optout.yaml"))
	if !bytes.Equal(out, in) {
		t.Fatalf("opted-out manifest changed:\n%s", out)
	}
	if len(reports) != 1 || reports[0].Injected || !strings.Contains(reports[0].Skipped, "opted out") {
		t.Fatalf("reports %+v", reports)
	}
	mixed, err := os.ReadFile(filepath.Join("testdata", "mixed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ = injectFile(t, testConfig(), filepath.Join("testdata", "mixed.yaml"))
	docs := strings.Split(string(mixed), "---\n")
	for _, d := range docs[:3] {
		if !strings.Contains(string(out), d) {
			t.Errorf("document not passed through untouched:\n%s", d)
		}
	}
}

// decodeDeployment reads a one-document manifest strictly.
func decodeDeployment(t *testing.T, b []byte) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

func findContainer(list []corev1.Container, name string) *corev1.Container {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestDeploymentSidecar checks the injected native sidecar field by field:
// what the issue asks of it, not only what the golden file holds.
func TestDeploymentSidecar(t *testing.T) {
	out, reports := injectFile(t, testConfig(), filepath.Join("testdata", "deployment.yaml"))
	d := decodeDeployment(t, out)
	spec := d.Spec.Template.Spec
	if len(spec.InitContainers) != 2 || spec.InitContainers[0].Name != inject.SidecarName {
		t.Fatalf("init containers %v: want the sidecar first", names(spec.InitContainers))
	}
	sc := spec.InitContainers[0]
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the sidecar is not a native sidecar (restartPolicy Always)")
	}
	s := sc.SecurityContext
	if s == nil || s.RunAsNonRoot == nil || !*s.RunAsNonRoot || s.RunAsUser == nil || *s.RunAsUser == 0 ||
		s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem || s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation ||
		s.Capabilities == nil || !reflect.DeepEqual(s.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("security context %+v", s)
	}
	for what, p := range map[string]*corev1.Probe{"startup": sc.StartupProbe, "readiness": sc.ReadinessProbe, "liveness": sc.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != inject.AdminPortName {
			t.Errorf("%s probe %+v: want HTTP on the admin port", what, p)
		}
	}
	if len(sc.Ports) != 1 || sc.Ports[0].Name != inject.AdminPortName || sc.Ports[0].ContainerPort != inject.DefaultAdminPort {
		t.Errorf("ports %+v", sc.Ports)
	}
	if !reflect.DeepEqual(sc.Args, []string{"sidecar", "--config", inject.ConfigFile}) {
		t.Errorf("args %q", sc.Args)
	}
	var fields []string
	for _, e := range sc.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			fields = append(fields, e.Name+"="+e.ValueFrom.FieldRef.FieldPath)
		}
	}
	if !reflect.DeepEqual(fields, []string{"POD_NAME=metadata.name", "POD_NAMESPACE=metadata.namespace"}) {
		t.Errorf("downward API env %q", fields)
	}
	app := findContainer(spec.Containers, "app")
	if got, want := envValue(app, "DATABASE_URL"), "postgres://acme:$(DB_PASSWORD)@127.0.0.1:6432/app?sslmode=disable&application_name=orders"; got != want {
		t.Errorf("DATABASE_URL %q, want %q", got, want)
	}
	if got, want := envValue(app, "REDIS_URL"), "redis://acme:$(DB_PASSWORD)@127.0.0.1:6380/0"; got != want {
		t.Errorf("REDIS_URL %q, want %q", got, want)
	}
	if got := envValue(app, "LOG_LEVEL"); got != "info" {
		t.Errorf("LOG_LEVEL changed: %q", got)
	}
	migrate := findContainer(spec.InitContainers, "migrate")
	if got := envValue(migrate, "DATABASE_URL"); !strings.Contains(got, "@127.0.0.1:6432/app?sslmode=disable&application_name=orders-migrate") {
		t.Errorf("the migration init container's DATABASE_URL %q: native sidecars run before it", got)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	if v := vols[inject.ConfigVolume]; v.Secret == nil || v.Secret.SecretName != inject.DefaultConfigSecret {
		t.Errorf("config volume %+v", v)
	}
	if v := vols[inject.StateVolume]; v.EmptyDir == nil {
		t.Errorf("state volume %+v", v)
	}
	if st := d.Spec.Template.Annotations[inject.AnnotationStatus]; !strings.Contains(st, `"version":"1.0.0"`) {
		t.Errorf("status annotation %q", st)
	}
	if len(reports) != 1 || !reports[0].Injected || len(reports[0].Warnings) != 0 {
		t.Errorf("reports %+v", reports)
	}
}

func names(l []corev1.Container) []string {
	var out []string
	for _, c := range l {
		out = append(out, c.Name)
	}
	return out
}

// TestWrongVersion: a pod injected by an older injector, in the other
// layout and with other ports, is updated to exactly what a fresh
// injection gives, with one sidecar.
func TestWrongVersion(t *testing.T) {
	fresh, _ := injectFile(t, testConfig(), filepath.Join("testdata", "deployment.yaml"))
	old, _ := injectFile(t, oldConfig(), filepath.Join("testdata", "deployment.yaml"))
	od := decodeDeployment(t, old)
	if findContainer(od.Spec.Template.Spec.Containers, inject.SidecarName) == nil {
		t.Fatal("the old injection has no sidecar container")
	}
	var out bytes.Buffer
	if _, err := testConfig().Manifests(bytes.NewReader(old), &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), fresh) {
		t.Fatalf("re-injecting an old injection:\n%s\nwant:\n%s", out.Bytes(), fresh)
	}
}

// TestFallback: without native sidecars the sidecar is the first
// container, with hooks that hold the app until it is ready and hold its
// own SIGTERM back; init containers are left alone, with a warning.
func TestFallback(t *testing.T) {
	out, reports := injectFile(t, testConfig(), filepath.Join("testdata", "fallback.yaml"))
	d := decodeDeployment(t, out)
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 2 || spec.Containers[0].Name != inject.SidecarName || spec.Containers[0].RestartPolicy != nil {
		t.Fatalf("containers %v", names(spec.Containers))
	}
	sc := spec.Containers[0]
	if sc.Lifecycle == nil || sc.Lifecycle.PostStart == nil || sc.Lifecycle.PreStop == nil ||
		!reflect.DeepEqual(sc.Lifecycle.PostStart.Exec.Command[:3], []string{inject.Binary, "inject", "wait"}) {
		t.Fatalf("lifecycle %+v", sc.Lifecycle)
	}
	if got := d.Spec.Template.Annotations["kubectl.kubernetes.io/default-container"]; got != "web" {
		t.Errorf("default container %q", got)
	}
	if got := envValue(findContainer(spec.InitContainers, "migrate"), "DATABASE_URL"); got != "postgres://acme:pw@db.shop.svc:5432/app" {
		t.Errorf("init container rewritten without native sidecars: %q", got)
	}
	if len(reports) != 1 || len(reports[0].Warnings) != 1 || !strings.Contains(reports[0].Warnings[0], "init container migrate") {
		t.Errorf("warnings %+v", reports)
	}
}

// podWith is a minimal pod for the refusal cases.
func podWith(ann map[string]string, mutate func(*corev1.PodSpec)) (*metav1.ObjectMeta, *corev1.PodSpec) {
	meta := &metav1.ObjectMeta{Name: "p", Annotations: ann, Labels: map[string]string{"app": "p"}}
	spec := &corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1",
		Env: []corev1.EnvVar{{Name: "DATABASE_URL", Value: "postgres://acme:pw@db:5432/app"}}}}}
	if mutate != nil {
		mutate(spec)
	}
	return meta, spec
}

// TestRefused: what cannot be injected is an *Error carrying the pod's
// failure policy, and the pod is left exactly as it was.
func TestRefused(t *testing.T) {
	cases := []struct {
		name   string
		ann    map[string]string
		mutate func(*corev1.PodSpec)
		policy inject.FailurePolicy
		want   string
	}{
		{"hostNetwork", nil, func(s *corev1.PodSpec) { s.HostNetwork = true }, inject.FailurePolicyFail, "hostNetwork"},
		{"port taken", nil, func(s *corev1.PodSpec) { s.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 6432}} }, inject.FailurePolicyFail, "port 6432"},
		{"no containers", nil, func(s *corev1.PodSpec) { s.Containers = nil }, inject.FailurePolicyFail, "no containers"},
		{"inject not a boolean", map[string]string{inject.AnnotationInject: "yes"}, nil, inject.FailurePolicyFail, "not \"true\" or \"false\""},
		{"bad tenant source", map[string]string{inject.AnnotationTenantSource: "header:x"}, nil, inject.FailurePolicyFail, "not a tenant source"},
		{"missing tenant label", map[string]string{inject.AnnotationTenantSource: "label:customer"}, nil, inject.FailurePolicyFail, "no label \"customer\""},
		{"bad quantity", map[string]string{inject.AnnotationCPU: "lots"}, nil, inject.FailurePolicyFail, "tenantguard.io/cpu"},
		{"request above limit", map[string]string{inject.AnnotationMemory: "1Gi"}, nil, inject.FailurePolicyFail, "above its limit"},
		{"bad secret name", map[string]string{inject.AnnotationConfigSecret: "Not_A_Name"}, nil, inject.FailurePolicyFail, "not a Secret name"},
		{"bad env name", map[string]string{inject.AnnotationEnv: "DATABASE URL"}, nil, inject.FailurePolicyFail, "tenantguard.io/env"},
		{"bad native flag", map[string]string{inject.AnnotationNative: "maybe"}, nil, inject.FailurePolicyFail, "native-sidecar"},
		{"bad failure policy", map[string]string{inject.AnnotationFailurePolicy: "shrug"}, nil, inject.FailurePolicyFail, "failure-policy"},
		{"ignore policy kept with another error", map[string]string{inject.AnnotationFailurePolicy: "ignore", inject.AnnotationCPU: "x"}, nil, inject.FailurePolicyIgnore, "tenantguard.io/cpu"},
		{"job pod without native sidecars", map[string]string{inject.AnnotationNative: "false"}, func(s *corev1.PodSpec) { s.RestartPolicy = corev1.RestartPolicyOnFailure }, inject.FailurePolicyFail, "ever completing"},
	}
	c := testConfig()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			meta, spec := podWith(tc.ann, tc.mutate)
			m0, s0 := meta.DeepCopy(), spec.DeepCopy()
			_, err := c.Pod(meta, spec, inject.ScopeNamespace)
			var ie *inject.Error
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.want) || ie.Policy != tc.policy {
				t.Fatalf("err %v (policy %v), want one with %q and policy %s", err, ie, tc.want, tc.policy)
			}
			if !reflect.DeepEqual(meta, m0) || !reflect.DeepEqual(spec, s0) {
				t.Fatal("the pod was changed by a refused injection")
			}
		})
	}
}

// TestScope: with the annotation scope only opted-in pods are injected;
// opting out wins over the namespace.
func TestScope(t *testing.T) {
	c := testConfig()
	cases := []struct {
		name   string
		ann    map[string]string
		scope  inject.Scope
		inject bool
	}{
		{"namespace", nil, inject.ScopeNamespace, true},
		{"namespace, opted out", map[string]string{inject.AnnotationInject: "false"}, inject.ScopeNamespace, false},
		{"annotation scope, not opted in", nil, inject.ScopeAnnotation, false},
		{"annotation scope, opted in", map[string]string{inject.AnnotationInject: "true"}, inject.ScopeAnnotation, true},
		{"annotation scope, opted out", map[string]string{inject.AnnotationInject: "false"}, inject.ScopeAnnotation, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			meta, spec := podWith(tc.ann, nil)
			s0 := spec.DeepCopy()
			out, err := c.Pod(meta, spec, tc.scope)
			if err != nil {
				t.Fatal(err)
			}
			if out.Injected != tc.inject || (out.Skipped == "") != tc.inject {
				t.Fatalf("outcome %+v, want injected=%v", out, tc.inject)
			}
			if !tc.inject && !reflect.DeepEqual(spec, s0) {
				t.Fatal("a skipped pod was changed")
			}
		})
	}
}

// TestWarnings: variables the injector cannot rewrite are named, without
// their values.
func TestWarnings(t *testing.T) {
	c := testConfig()
	meta, spec := podWith(nil, func(s *corev1.PodSpec) {
		s.Containers[0].Env = []corev1.EnvVar{
			{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "url"}}},
			{Name: "REDIS_URL", Value: "memcached://secret-host:11211"},
		}
		s.Containers = append(s.Containers, corev1.Container{Name: "worker", Image: "w:1",
			EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "env"}}}}})
	})
	out, err := c.Pod(meta, spec, inject.ScopeNamespace)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(out.Warnings, "\n")
	for _, want := range []string{"app: DATABASE_URL comes from a reference", "app: REDIS_URL left as is", "worker: DATABASE_URL may come from envFrom", "nothing was pointed at the sidecar"} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "secret-host") {
		t.Errorf("a warning quotes a variable's value:\n%s", all)
	}
}
