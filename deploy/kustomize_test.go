package deploy_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/inject"
	"github.com/tenantguard/tenantguard/internal/injectorsvc"
)

// rendered is the output of `kustomize build`, decoded strictly.
type rendered struct {
	objects []runtime.Object
	byKey   map[string]runtime.Object // "Kind/name"
}

// render runs kustomize in-process (krusty, what `kubectl apply -k` runs)
// with its default load restrictions, and decodes every resource strictly.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := &rendered{byKey: map[string]runtime.Object{}}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		objs := decodeObjects(t, y)
		if len(objs) != 1 {
			t.Fatalf("resource %s decodes to %d objects", r.CurId(), len(objs))
		}
		key := r.GetKind() + "/" + r.GetName()
		if _, dup := out.byKey[key]; dup {
			t.Fatalf("%s twice", key)
		}
		out.objects = append(out.objects, objs[0])
		out.byKey[key] = objs[0]
	}
	return out
}

func get[T runtime.Object](t *testing.T, r *rendered, kind, name string) T {
	t.Helper()
	obj, ok := r.byKey[kind+"/"+name]
	if !ok {
		t.Fatalf("no %s %s in the rendering", kind, name)
	}
	typed, ok := obj.(T)
	if !ok {
		t.Fatalf("%s %s is a %T", kind, name, obj)
	}
	return typed
}

// injectorConfig is the injector's configuration as rendered (the
// generated ConfigMap, whose name kustomize suffixes with a hash).
func injectorConfig(t *testing.T, r *rendered) *config.Injector {
	t.Helper()
	d := get[*appsv1.Deployment](t, r, "Deployment", "tenantguard-injector")
	cmName := d.Spec.Template.Spec.Volumes[0].ConfigMap.Name
	cm := get[*corev1.ConfigMap](t, r, "ConfigMap", cmName)
	cfg, err := config.ParseInjector("injector.yaml", []byte(cm.Data["injector.yaml"]), "0.1.0", true)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var layouts = []struct {
	dir             string
	replicas        int32 // control plane and injector
	namespaceFailOK bool  // the namespace webhook fails open
}{
	{"kubernetes/base", 2, false},
	{"kubernetes/overlays/production", 3, false},
	{"kubernetes/overlays/development", 1, true},
}

// TestKustomize renders the base and each overlay and checks what the
// issue asks of them.
func TestKustomize(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.dir, func(t *testing.T) {
			r := render(t, l.dir)
			cfg := injectorConfig(t, r)
			for _, key := range []string{
				"Namespace/tenantguard",
				"Deployment/tenantguard-controlplane", "Service/tenantguard-controlplane", "PodDisruptionBudget/tenantguard-controlplane",
				"Deployment/tenantguard-extauthz", "Service/tenantguard-extauthz", "HorizontalPodAutoscaler/tenantguard-extauthz",
				"Deployment/tenantguard-injector", "Service/tenantguard-injector", "MutatingWebhookConfiguration/tenantguard-injector",
				"Role/tenantguard-injector", "ClusterRole/tenantguard-injector", "RoleBinding/tenantguard-injector", "ClusterRoleBinding/tenantguard-injector",
				"Deployment/tenantguard-edge", "Service/tenantguard-edge",
				"NetworkPolicy/default-deny-ingress", "NetworkPolicy/tenantguard-controlplane", "NetworkPolicy/tenantguard-extauthz",
			} {
				if _, ok := r.byKey[key]; !ok {
					t.Errorf("missing %s", key)
				}
			}
			for _, name := range []string{"tenantguard-controlplane", "tenantguard-injector"} {
				if d := get[*appsv1.Deployment](t, r, "Deployment", name); d.Spec.Replicas == nil || *d.Spec.Replicas != l.replicas {
					t.Errorf("%s replicas %v, want %d", name, d.Spec.Replicas, l.replicas)
				}
			}
			checkPods(t, r, cfg)
			checkServices(t, r)
			checkWebhook(t, r, cfg, l.namespaceFailOK)
			checkRBAC(t, r, cfg)
			checkNetworkPolicies(t, r)
			checkDisruption(t, r)
		})
	}
}

// checkPods: every container of tenantguard's namespace runs as the
// restricted Pod Security Standard asks, tenantguard's own image is the
// one the injector injects, and probes and volumes refer to what exists.
func checkPods(t *testing.T, r *rendered, cfg *config.Injector) {
	t.Helper()
	for _, obj := range r.objects {
		d, ok := obj.(*appsv1.Deployment)
		if !ok {
			continue
		}
		spec := d.Spec.Template.Spec
		if d.Namespace != "tenantguard" {
			t.Errorf("Deployment %s in namespace %q", d.Name, d.Namespace)
		}
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod security context %+v", d.Name, psc)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = v
			if v.Secret != nil && v.Secret.DefaultMode != nil && *v.Secret.DefaultMode&0o004 == 0 && (psc.FSGroup == nil) {
				t.Errorf("%s: Secret volume %s is unreadable without an fsGroup", d.Name, v.Name)
			}
		}
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s/%s: container security context %+v", d.Name, c.Name, sc)
			}
			if strings.Contains(c.Image, "tenantguard") && c.Image != cfg.Sidecar.Image {
				t.Errorf("%s/%s runs %s, the injector injects %s: keep the two in step", d.Name, c.Name, c.Image, cfg.Sidecar.Image)
			}
			ports := map[string]bool{}
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
			for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				if p == nil {
					continue
				}
				var port string
				switch {
				case p.HTTPGet != nil:
					port = p.HTTPGet.Port.StrVal
				case p.TCPSocket != nil:
					port = p.TCPSocket.Port.StrVal
				}
				if !ports[port] {
					t.Errorf("%s/%s: %s probe on port %q, which the container does not name", d.Name, c.Name, what, port)
				}
			}
			if c.ReadinessProbe == nil {
				t.Errorf("%s/%s has no readiness probe", d.Name, c.Name)
			}
			for _, m := range c.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok {
					t.Errorf("%s/%s mounts %s, which the pod does not have", d.Name, c.Name, m.Name)
				}
			}
		}
	}
}

// checkServices: every Service selects a Deployment's pods and targets
// ports they name.
func checkServices(t *testing.T, r *rendered) {
	t.Helper()
	for _, obj := range r.objects {
		s, ok := obj.(*corev1.Service)
		if !ok {
			continue
		}
		d := get[*appsv1.Deployment](t, r, "Deployment", s.Name)
		for k, v := range s.Spec.Selector {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, the pods have %q", s.Name, k, v, d.Spec.Template.Labels[k])
			}
		}
		named := map[string]bool{}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				named[p.Name] = true
			}
		}
		for _, p := range s.Spec.Ports {
			if !named[p.TargetPort.StrVal] {
				t.Errorf("Service %s port %s targets %q, which no container names", s.Name, p.Name, p.TargetPort.String())
			}
		}
	}
}

// checkWebhook: the two webhooks call the paths the injector serves on the
// service whose certificate it manages, never in its own namespace.
func checkWebhook(t *testing.T, r *rendered, cfg *config.Injector, namespaceFailOpen bool) {
	t.Helper()
	wc := get[*admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration", cfg.SelfManaged.WebhookConfiguration)
	want := map[string]struct {
		path   string
		policy admissionregistrationv1.FailurePolicyType
	}{
		"namespace.inject.tenantguard.io": {injectorsvc.PathNamespace, admissionregistrationv1.Fail},
		"pod.inject.tenantguard.io":       {injectorsvc.PathAnnotation, admissionregistrationv1.Ignore},
	}
	if namespaceFailOpen {
		want["namespace.inject.tenantguard.io"] = struct {
			path   string
			policy admissionregistrationv1.FailurePolicyType
		}{injectorsvc.PathNamespace, admissionregistrationv1.Ignore}
	}
	if len(wc.Webhooks) != len(want) {
		t.Fatalf("%d webhooks", len(wc.Webhooks))
	}
	svc := get[*corev1.Service](t, r, "Service", cfg.SelfManaged.Service)
	for _, w := range wc.Webhooks {
		exp, ok := want[w.Name]
		s := w.ClientConfig.Service
		switch {
		case !ok:
			t.Errorf("webhook %s", w.Name)
		case s == nil || s.Name != svc.Name || s.Namespace != svc.Namespace || s.Path == nil || *s.Path != exp.path || s.Port == nil || *s.Port != svc.Spec.Ports[0].Port:
			t.Errorf("webhook %s calls %+v, want service %s/%s port %d path %s", w.Name, s, svc.Namespace, svc.Name, svc.Spec.Ports[0].Port, exp.path)
		case w.FailurePolicy == nil || *w.FailurePolicy != exp.policy:
			t.Errorf("webhook %s failurePolicy %v, want %s", w.Name, w.FailurePolicy, exp.policy)
		case w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone || !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}):
			t.Errorf("webhook %s: sideEffects %v, versions %v", w.Name, w.SideEffects, w.AdmissionReviewVersions)
		case len(w.ClientConfig.CABundle) != 0:
			t.Errorf("webhook %s ships a caBundle: the injector sets it", w.Name)
		}
		if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) {
			t.Errorf("webhook %s rules %+v", w.Name, w.Rules)
		}
		excluded := false
		for _, e := range w.NamespaceSelector.MatchExpressions {
			if e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" && slices.Contains(e.Values, "tenantguard") && slices.Contains(e.Values, "kube-system") {
				excluded = true
			}
		}
		if !excluded {
			t.Errorf("webhook %s does not exclude tenantguard's own namespace: the injector could not start while no injector answers", w.Name)
		}
	}
}

// checkRBAC: the only rules are the injector's, each limited to the one
// object it manages where Kubernetes allows it; no wildcards.
func checkRBAC(t *testing.T, r *rendered, cfg *config.Injector) {
	t.Helper()
	for _, obj := range r.objects {
		var rules []rbacv1.PolicyRule
		switch o := obj.(type) {
		case *rbacv1.Role:
			rules = o.Rules
		case *rbacv1.ClusterRole:
			rules = o.Rules
		default:
			continue
		}
		for _, rule := range rules {
			for _, l := range [][]string{rule.Verbs, rule.Resources, rule.APIGroups, rule.ResourceNames} {
				if slices.Contains(l, "*") {
					t.Errorf("wildcard in %+v", rule)
				}
			}
		}
	}
	role := get[*rbacv1.Role](t, r, "Role", "tenantguard-injector")
	wantRole := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{cfg.SelfManaged.Secret}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
	}
	if fmt.Sprint(role.Rules) != fmt.Sprint(wantRole) {
		t.Errorf("Role rules %+v, want %+v", role.Rules, wantRole)
	}
	cr := get[*rbacv1.ClusterRole](t, r, "ClusterRole", "tenantguard-injector")
	wantCR := []rbacv1.PolicyRule{{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
		ResourceNames: []string{cfg.SelfManaged.WebhookConfiguration}, Verbs: []string{"get", "patch"}}}
	if fmt.Sprint(cr.Rules) != fmt.Sprint(wantCR) {
		t.Errorf("ClusterRole rules %+v, want %+v", cr.Rules, wantCR)
	}
	injector := get[*appsv1.Deployment](t, r, "Deployment", "tenantguard-injector")
	for _, b := range []rbacv1.Subject{get[*rbacv1.RoleBinding](t, r, "RoleBinding", "tenantguard-injector").Subjects[0], get[*rbacv1.ClusterRoleBinding](t, r, "ClusterRoleBinding", "tenantguard-injector").Subjects[0]} {
		if b.Kind != "ServiceAccount" || b.Name != injector.Spec.Template.Spec.ServiceAccountName || b.Namespace != "tenantguard" {
			t.Errorf("binding subject %+v", b)
		}
	}
	for _, name := range []string{"tenantguard-controlplane", "tenantguard-extauthz", "tenantguard-edge"} {
		d := get[*appsv1.Deployment](t, r, "Deployment", name)
		if m := d.Spec.Template.Spec.AutomountServiceAccountToken; m == nil || *m {
			t.Errorf("%s mounts a service account token it has no use for", name)
		}
	}
}

// peer is one "from" entry of a NetworkPolicy, as text.
func peers(rule networkingv1.NetworkPolicyIngressRule) []string {
	var out []string
	for _, f := range rule.From {
		var b strings.Builder
		if f.NamespaceSelector != nil {
			fmt.Fprintf(&b, "ns%v", f.NamespaceSelector.MatchLabels)
		}
		if f.PodSelector != nil {
			fmt.Fprintf(&b, "pod%v", f.PodSelector.MatchLabels)
		}
		out = append(out, b.String())
	}
	return out
}

// checkNetworkPolicies: ingress is denied by default; the control plane's
// xDS port admits sidecars, ext_authz and the edge Envoy only; ext_authz's
// gRPC port admits the edge Envoy only.
func checkNetworkPolicies(t *testing.T, r *rendered) {
	t.Helper()
	deny := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy", "default-deny-ingress")
	if len(deny.Spec.PodSelector.MatchLabels) != 0 || len(deny.Spec.Ingress) != 0 || !slices.Contains(deny.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("default deny %+v", deny.Spec)
	}
	sidecar := fmt.Sprintf("ns%vpod%v", map[string]string{}, map[string]string{inject.LabelSidecar: "true"})
	extauthz := fmt.Sprintf("pod%v", map[string]string{"app.kubernetes.io/name": "tenantguard-extauthz"})
	edge := fmt.Sprintf("pod%v", map[string]string{"app.kubernetes.io/name": "tenantguard-edge"})
	for _, tc := range []struct {
		policy, port string
		want         []string
	}{
		{"tenantguard-controlplane", "xds", []string{sidecar, extauthz, edge}},
		{"tenantguard-extauthz", "grpc", []string{edge}},
	} {
		np := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy", tc.policy)
		found := false
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port != nil && p.Port.StrVal == tc.port {
					found = true
					if got := peers(rule); !slices.Equal(got, tc.want) {
						t.Errorf("%s port %s admits %q, want %q", tc.policy, tc.port, got, tc.want)
					}
				}
			}
		}
		if !found {
			t.Errorf("%s has no rule for port %s", tc.policy, tc.port)
		}
	}
}

// checkDisruption: the PodDisruptionBudgets select pods that exist, and
// the HPA scales ext_authz.
func checkDisruption(t *testing.T, r *rendered) {
	t.Helper()
	for _, obj := range r.objects {
		pdb, ok := obj.(*policyv1.PodDisruptionBudget)
		if !ok {
			continue
		}
		d := get[*appsv1.Deployment](t, r, "Deployment", pdb.Name)
		for k, v := range pdb.Spec.Selector.MatchLabels {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("PodDisruptionBudget %s selects %s=%s", pdb.Name, k, v)
			}
		}
		if pdb.Spec.MinAvailable != nil && d.Spec.Replicas != nil && pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
			t.Errorf("PodDisruptionBudget %s: minAvailable %v of %d replicas blocks every drain", pdb.Name, pdb.Spec.MinAvailable, *d.Spec.Replicas)
		}
	}
	hpa := get[*autoscalingv2.HorizontalPodAutoscaler](t, r, "HorizontalPodAutoscaler", "tenantguard-extauthz")
	if hpa.Spec.ScaleTargetRef.Name != "tenantguard-extauthz" || hpa.Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("HPA target %+v", hpa.Spec.ScaleTargetRef)
	}
	if d := get[*appsv1.Deployment](t, r, "Deployment", "tenantguard-extauthz"); d.Spec.Replicas != nil {
		t.Error("ext_authz's Deployment sets replicas: every apply would fight the HPA")
	}
}

// TestSidecarTemplateMatchesInjector: the sidecar configuration template
// listens where the injector points apps and probes, and keeps its cache
// in the directory the injection mounts writable.
func TestSidecarTemplateMatchesInjector(t *testing.T) {
	data, err := os.ReadFile("kubernetes/config/sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f config.File
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	cfg := injectorConfig(t, render(t, "kubernetes/base"))
	p := cfg.Sidecar.Ports
	for _, c := range []struct{ field, got, want string }{
		{"listen.postgres", f.Listen.Postgres, fmt.Sprintf("127.0.0.1:%d", p.Postgres)},
		{"listen.redis", f.Listen.Redis, fmt.Sprintf("127.0.0.1:%d", p.Redis)},
		{"listen.admin", f.Listen.Admin, fmt.Sprintf("0.0.0.0:%d", p.Admin)},
	} {
		if c.got != c.want {
			t.Errorf("sidecar.yaml %s is %q; the injector expects %q", c.field, c.got, c.want)
		}
	}
	if !strings.HasPrefix(f.ControlPlane.CacheFile, inject.StateDir+"/") {
		t.Errorf("controlplane.cache_file %q is not under %s, the only writable directory", f.ControlPlane.CacheFile, inject.StateDir)
	}
	if !strings.Contains(f.ControlPlane.NodeID, "${POD_NAME}") {
		t.Errorf("controlplane.node_id %q does not name the pod", f.ControlPlane.NodeID)
	}
	if cfg.Sidecar.ConfigSecret != "tenantguard-sidecar" {
		t.Errorf("config secret %q", cfg.Sidecar.ConfigSecret)
	}
}
