package inject

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Annotation keys, on the pod or the pod template.
const (
	AnnotationInject        = "tenantguard.io/inject"
	AnnotationStatus        = "tenantguard.io/status"
	AnnotationTenantSource  = "tenantguard.io/tenant-source"
	AnnotationEnv           = "tenantguard.io/env"
	AnnotationConfigSecret  = "tenantguard.io/config-secret"
	AnnotationCPU           = "tenantguard.io/cpu"
	AnnotationCPULimit      = "tenantguard.io/cpu-limit"
	AnnotationMemory        = "tenantguard.io/memory"
	AnnotationMemoryLimit   = "tenantguard.io/memory-limit"
	AnnotationFailurePolicy = "tenantguard.io/failure-policy"
	AnnotationNative        = "tenantguard.io/native-sidecar"

	// LabelInject on a namespace opts every pod in it in (value "true");
	// the webhook configuration selects on it.
	LabelInject = "tenantguard.io/inject"
	// LabelSidecar marks injected pods (value "true"), so that the
	// NetworkPolicies let them reach the control plane.
	LabelSidecar = "tenantguard.io/sidecar"

	// defaultContainerAnnotation makes kubectl logs/exec pick the app, not
	// the sidecar, when the sidecar is the first container.
	defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"
)

// tenantSource says where rewritten URLs take their user name (the tenant).
type tenantSource struct {
	kind string // "url", "label" or "annotation"
	key  string
}

// fieldPath is the downward API path of the tenant's label or annotation.
func (s tenantSource) fieldPath() string {
	return fmt.Sprintf("metadata.%ss['%s']", s.kind, s.key)
}

// podOptions are the template adjusted by one pod's annotations.
type podOptions struct {
	tenant        tenantSource
	env           []string
	configSecret  string
	resources     corev1.ResourceRequirements
	failurePolicy FailurePolicy
	native        bool
}

// failurePolicyOf reads only the failure policy, so that even a pod whose
// other annotations are wrong is treated as it asks.
func (c *Config) failurePolicyOf(ann map[string]string) FailurePolicy {
	switch strings.TrimSpace(ann[AnnotationFailurePolicy]) {
	case string(FailurePolicyIgnore):
		return FailurePolicyIgnore
	case string(FailurePolicyFail):
		return FailurePolicyFail
	}
	return c.FailurePolicy
}

// options reads a pod's annotations over the template. Every error names
// the annotation and says what it accepts.
func (c *Config) options(ann map[string]string) (*podOptions, error) {
	o := &podOptions{
		tenant:        tenantSource{kind: "url"},
		env:           c.Env,
		configSecret:  c.ConfigSecret,
		resources:     *c.Resources.DeepCopy(),
		failurePolicy: c.FailurePolicy,
		native:        c.Native,
	}
	if v, ok := ann[AnnotationFailurePolicy]; ok {
		switch strings.TrimSpace(v) {
		case string(FailurePolicyFail), string(FailurePolicyIgnore):
			o.failurePolicy = FailurePolicy(strings.TrimSpace(v))
		default:
			return nil, fmt.Errorf("annotation %s: %q is not a failure policy (fail or ignore)", AnnotationFailurePolicy, v)
		}
	}
	if v, ok := ann[AnnotationTenantSource]; ok {
		v = strings.TrimSpace(v)
		kind, key, _ := strings.Cut(v, ":")
		switch {
		case v == "url":
		case (kind == "label" || kind == "annotation") && key != "":
			if errs := validation.IsQualifiedName(key); len(errs) > 0 {
				return nil, fmt.Errorf("annotation %s: %q is not a valid %s key: %s", AnnotationTenantSource, key, kind, strings.Join(errs, "; "))
			}
			o.tenant = tenantSource{kind: kind, key: key}
		default:
			return nil, fmt.Errorf("annotation %s: %q is not a tenant source (url, label:<key> or annotation:<key>)", AnnotationTenantSource, v)
		}
	}
	if v, ok := ann[AnnotationEnv]; ok {
		o.env = nil
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if errs := validation.IsEnvVarName(name); len(errs) > 0 || name == TenantEnv {
				return nil, fmt.Errorf("annotation %s: %q is not a variable the sidecar can take over", AnnotationEnv, name)
			}
			o.env = append(o.env, name)
		}
	}
	if v, ok := ann[AnnotationConfigSecret]; ok {
		v = strings.TrimSpace(v)
		if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
			return nil, fmt.Errorf("annotation %s: %q is not a Secret name: %s", AnnotationConfigSecret, v, strings.Join(errs, "; "))
		}
		o.configSecret = v
	}
	for _, r := range []struct {
		annotation string
		name       corev1.ResourceName
		list       *corev1.ResourceList
	}{
		{AnnotationCPU, corev1.ResourceCPU, &o.resources.Requests},
		{AnnotationCPULimit, corev1.ResourceCPU, &o.resources.Limits},
		{AnnotationMemory, corev1.ResourceMemory, &o.resources.Requests},
		{AnnotationMemoryLimit, corev1.ResourceMemory, &o.resources.Limits},
	} {
		v, ok := ann[r.annotation]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(strings.TrimSpace(v))
		if err != nil || q.Sign() <= 0 {
			return nil, fmt.Errorf("annotation %s: %q is not a positive quantity (e.g. 100m, 128Mi)", r.annotation, v)
		}
		if *r.list == nil {
			*r.list = corev1.ResourceList{}
		}
		(*r.list)[r.name] = q
	}
	if err := checkResources(o.resources); err != nil {
		return nil, fmt.Errorf("annotations %s…: %w", AnnotationCPU, err)
	}
	if v, ok := ann[AnnotationNative]; ok {
		switch strings.TrimSpace(v) {
		case "true":
			o.native = true
		case "false":
			o.native = false
		default:
			return nil, fmt.Errorf("annotation %s: %q is not true or false", AnnotationNative, v)
		}
	}
	return o, nil
}
