package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Scope says how a pod came to be considered for injection.
type Scope int

const (
	// ScopeNamespace: the pod's namespace opted in (or the offline command
	// was asked): every pod is injected unless it opts out.
	ScopeNamespace Scope = iota
	// ScopeAnnotation: only pods annotated tenantguard.io/inject: "true"
	// are injected.
	ScopeAnnotation
)

// Outcome is what an injection did to one pod template.
type Outcome struct {
	// Injected is true when the pod has the current sidecar now, whether
	// or not it had it before.
	Injected bool
	// Skipped says why the pod was left alone; "" when injected.
	Skipped string
	// Warnings are for the user: variables that could not be pointed at
	// the sidecar, and why.
	Warnings []string
}

// Error is an injection that the pod's settings make impossible. Policy
// is the pod's failure policy: whether the pod is refused or admitted
// without a sidecar.
type Error struct {
	Policy FailurePolicy
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// status is the tenantguard.io/status annotation: what the injection did.
type status struct {
	Version      string   `json:"version"`
	Image        string   `json:"image"`
	Native       bool     `json:"native"`
	ConfigSecret string   `json:"configSecret"`
	Rewritten    []string `json:"rewritten,omitempty"` // container/VARIABLE
	// DefaultContainer is set when the injection set kubectl's
	// default-container annotation (fallback layout), so that a later
	// injection can take it back.
	DefaultContainer bool `json:"defaultContainer,omitempty"`
}

// Pod injects the sidecar into a pod template in place, or leaves it
// untouched and says why (Outcome.Skipped), or returns an *Error and
// leaves it untouched: never half-injected.
func (c *Config) Pod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, scope Scope) (Outcome, error) {
	switch v := strings.TrimSpace(meta.Annotations[AnnotationInject]); {
	case v == "false":
		return Outcome{Skipped: fmt.Sprintf("opted out (%s: \"false\")", AnnotationInject)}, nil
	case v != "" && v != "true":
		return Outcome{}, &Error{Policy: c.failurePolicyOf(meta.Annotations),
			Err: fmt.Errorf("annotation %s: %q is not \"true\" or \"false\"", AnnotationInject, v)}
	case scope == ScopeAnnotation && v != "true":
		return Outcome{Skipped: fmt.Sprintf("not opted in (neither the namespace label nor the annotation %s: \"true\")", AnnotationInject)}, nil
	}
	opts, err := c.options(meta.Annotations)
	if err != nil {
		return Outcome{}, &Error{Policy: c.failurePolicyOf(meta.Annotations), Err: err}
	}
	m, s := meta.DeepCopy(), spec.DeepCopy()
	strip(m, s)
	warnings, err := c.add(m, s, opts)
	if err != nil {
		return Outcome{}, &Error{Policy: opts.failurePolicy, Err: err}
	}
	*meta, *spec = *m, *s
	return Outcome{Injected: true, Warnings: warnings}, nil
}

// strip removes everything an earlier injection added, of any version and
// in either layout. Rewritten URLs stay: rewriting is idempotent.
func strip(meta *metav1.ObjectMeta, spec *corev1.PodSpec) {
	notSidecar := func(c corev1.Container) bool { return c.Name == SidecarName }
	spec.InitContainers = slices.DeleteFunc(spec.InitContainers, notSidecar)
	spec.Containers = slices.DeleteFunc(spec.Containers, notSidecar)
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == ConfigVolume || v.Name == StateVolume || v.Name == CertsVolume
	})
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			list[i].Env = slices.DeleteFunc(list[i].Env, func(e corev1.EnvVar) bool { return e.Name == TenantEnv })
			if len(list[i].Env) == 0 {
				list[i].Env = nil
			}
		}
	}
	var st status
	if json.Unmarshal([]byte(meta.Annotations[AnnotationStatus]), &st) == nil && st.DefaultContainer {
		delete(meta.Annotations, defaultContainerAnnotation)
	}
	delete(meta.Annotations, AnnotationStatus)
	if len(meta.Annotations) == 0 {
		meta.Annotations = nil
	}
	delete(meta.Labels, LabelSidecar)
	if len(meta.Labels) == 0 {
		meta.Labels = nil
	}
}

// add injects into a stripped pod.
func (c *Config) add(meta *metav1.ObjectMeta, spec *corev1.PodSpec, o *podOptions) ([]string, error) {
	if spec.HostNetwork {
		return nil, errors.New("the pod uses hostNetwork: the sidecar's 127.0.0.1 listeners would be the node's, shared by every pod on it")
	}
	if len(spec.Containers) == 0 {
		return nil, errors.New("the pod has no containers")
	}
	if err := c.checkPorts(spec); err != nil {
		return nil, err
	}
	if o.tenant.kind != "url" {
		src := meta.Labels
		if o.tenant.kind == "annotation" {
			src = meta.Annotations
		}
		if strings.TrimSpace(src[o.tenant.key]) == "" {
			return nil, fmt.Errorf("annotation %s: the pod has no %s %q to take its tenant from", AnnotationTenantSource, o.tenant.kind, o.tenant.key)
		}
	}
	var warnings, rewritten []string
	// Native sidecars start before every regular init container, so those
	// (database migrations, typically) use the sidecar too; in the
	// fallback layout they run before it exists.
	for i := range spec.InitContainers {
		ctr := &spec.InitContainers[i]
		if !o.native {
			for _, e := range ctr.Env {
				if slices.Contains(o.env, e.Name) {
					warnings = append(warnings, fmt.Sprintf("init container %s: %s left as is: without native sidecars it runs before the sidecar", ctr.Name, e.Name))
				}
			}
			continue
		}
		r, w := c.rewriteEnv(ctr, o)
		rewritten, warnings = append(rewritten, r...), append(warnings, w...)
	}
	for i := range spec.Containers {
		r, w := c.rewriteEnv(&spec.Containers[i], o)
		rewritten, warnings = append(rewritten, r...), append(warnings, w...)
	}
	if len(rewritten) == 0 && len(o.env) > 0 {
		warnings = append(warnings, fmt.Sprintf("no container has %s as a literal URL: nothing was pointed at the sidecar (127.0.0.1:%d)", strings.Join(o.env, ", "), c.Ports.Postgres))
	}

	st := status{Version: c.Version, Image: c.Image, Native: o.native, ConfigSecret: o.configSecret, Rewritten: rewritten}
	sidecar := c.sidecar(o)
	if o.native {
		spec.InitContainers = slices.Insert(spec.InitContainers, 0, sidecar)
	} else {
		if spec.RestartPolicy == corev1.RestartPolicyNever || spec.RestartPolicy == corev1.RestartPolicyOnFailure {
			return nil, fmt.Errorf("the pod's restartPolicy is %s (a Job's): without native sidecars (Kubernetes 1.29+) the sidecar would keep it from ever completing", spec.RestartPolicy)
		}
		if meta.Annotations[defaultContainerAnnotation] == "" {
			setAnnotation(meta, defaultContainerAnnotation, spec.Containers[0].Name)
			st.DefaultContainer = true
		}
		spec.Containers = slices.Insert(spec.Containers, 0, sidecar)
	}
	mode := int32(0o444) // the sidecar runs as a non-root user without the pod's fsGroup
	spec.Volumes = append(spec.Volumes,
		corev1.Volume{Name: ConfigVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: o.configSecret, DefaultMode: &mode}}},
		corev1.Volume{Name: StateVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(resource.MustParse("64Mi"))}}},
	)
	if cc := c.Certificates; cc != nil {
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: CertsVolume, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
			Driver: CSIDriver, ReadOnly: ptr(true), VolumeAttributes: cc.volumeAttributes(c.RunAsUser),
		}}})
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	setAnnotation(meta, AnnotationStatus, string(b))
	if meta.Labels == nil {
		meta.Labels = map[string]string{}
	}
	meta.Labels[LabelSidecar] = "true"
	return warnings, nil
}

// checkPorts refuses a pod whose containers already use a port the
// sidecar listens on: they share one network namespace.
func (c *Config) checkPorts(spec *corev1.PodSpec) error {
	ours := map[int32]string{c.Ports.Postgres: "postgres", c.Ports.Admin: "admin"}
	if c.Ports.Redis != 0 {
		ours[c.Ports.Redis] = "redis"
	}
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, ctr := range list {
			for _, p := range ctr.Ports {
				if what, ok := ours[p.ContainerPort]; ok {
					return fmt.Errorf("container %s uses port %d, the sidecar's %s port", ctr.Name, p.ContainerPort, what)
				}
			}
		}
	}
	return nil
}

// rewriteEnv points the container's variables at the sidecar. It returns
// the rewritten variables (container/NAME) and warnings for the ones it
// could not rewrite.
func (c *Config) rewriteEnv(ctr *corev1.Container, o *podOptions) (rewritten, warnings []string) {
	found := map[string]bool{}
	for i := range ctr.Env {
		e := &ctr.Env[i]
		if !slices.Contains(o.env, e.Name) {
			continue
		}
		found[e.Name] = true
		if e.ValueFrom != nil {
			warnings = append(warnings, fmt.Sprintf("container %s: %s comes from a reference the injector cannot read: left as is (give it as a literal value, or point it at 127.0.0.1 yourself)", ctr.Name, e.Name))
			continue
		}
		v, err := rewriteURL(e.Value, c.Ports, o.tenant)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("container %s: %s left as is: %v", ctr.Name, e.Name, err))
			continue
		}
		e.Value = v
		rewritten = append(rewritten, ctr.Name+"/"+e.Name)
	}
	if len(ctr.EnvFrom) > 0 {
		for _, name := range o.env {
			if !found[name] {
				warnings = append(warnings, fmt.Sprintf("container %s: %s may come from envFrom, which the injector cannot rewrite", ctr.Name, name))
			}
		}
	}
	if len(rewritten) > 0 && o.tenant.kind != "url" {
		// Before the URLs: the kubelet expands $(VAR) only from variables
		// defined earlier in the list.
		ctr.Env = slices.Insert(ctr.Env, 0, corev1.EnvVar{Name: TenantEnv, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: o.tenant.fieldPath()},
		}})
	}
	return rewritten, warnings
}

// sidecar is the container the injection adds.
func (c *Config) sidecar(o *podOptions) corev1.Container {
	uid := c.RunAsUser
	ctr := corev1.Container{
		Name:            SidecarName,
		Image:           c.Image,
		ImagePullPolicy: c.ImagePullPolicy,
		Args:            []string{"sidecar", "--config", ConfigFile},
		Env: []corev1.EnvVar{
			// The configuration names the node to the control plane from
			// these: controlplane.node_id: "${POD_NAMESPACE}/${POD_NAME}".
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		},
		Ports:     []corev1.ContainerPort{{Name: AdminPortName, ContainerPort: c.Ports.Admin, Protocol: corev1.ProtocolTCP}},
		Resources: o.resources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: ConfigVolume, MountPath: ConfigDir, ReadOnly: true},
			{Name: StateVolume, MountPath: StateDir},
		},
		// Ready once the first policy is in force (from the control plane
		// or its cache) and the listeners accept clients.
		StartupProbe:             c.probe("/readyz", 1, int32(c.StartupTimeout.Seconds())),
		ReadinessProbe:           c.probe("/readyz", 5, 3),
		LivenessProbe:            c.probe("/healthz", 10, 3),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			RunAsNonRoot:             ptr(true),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Privileged:               ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if c.Certificates != nil {
		ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: CertsVolume, MountPath: CertsDir, ReadOnly: true})
	}
	if o.native {
		// A native sidecar: started, and ready (startup probe), before the
		// app's containers; stopped after them.
		ctr.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
		return ctr
	}
	// Fallback for clusters without native sidecars: the first container,
	// whose postStart hook holds the kubelet back from starting the app's
	// containers until the sidecar is ready, and whose preStop hook holds
	// its SIGTERM back so the app can close its connections first.
	ctr.Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{
			Binary, "inject", "wait", "--url", fmt.Sprintf("http://127.0.0.1:%d/readyz", c.Ports.Admin), "--timeout", c.StartupTimeout.String(),
		}}},
		PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{
			Binary, "inject", "wait", "--delay", c.ShutdownDelay.String(),
		}}},
	}
	return ctr
}

func (c *Config) probe(path string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(AdminPortName), Scheme: corev1.URISchemeHTTP,
		}},
		PeriodSeconds:    period,
		TimeoutSeconds:   1,
		SuccessThreshold: 1,
		FailureThreshold: max(failures, 1),
	}
}

func setAnnotation(meta *metav1.ObjectMeta, k, v string) {
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[k] = v
}

func ptr[T any](v T) *T { return &v }
