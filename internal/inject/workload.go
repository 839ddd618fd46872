package inject

import (
	"encoding/json"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
)

// ErrUnsupportedKind is returned by Patch for an object that is not a
// workload the injector knows; such objects are left as they are.
var ErrUnsupportedKind = errors.New("not a workload kind tenantguard injects")

// ErrMalformed is returned by Patch for an object that does not decode as
// its kind.
var ErrMalformed = errors.New("malformed object")

// workload is a kind with a pod template.
type workload struct {
	new      func() any
	template func(any) (*metav1.ObjectMeta, *corev1.PodSpec)
}

// workloads are the kinds the injector injects, by apiVersion and kind.
var workloads = map[[2]string]workload{
	{"v1", "Pod"}: {func() any { return &corev1.Pod{} }, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
		p := o.(*corev1.Pod)
		return &p.ObjectMeta, &p.Spec
	}},
	{"apps/v1", "Deployment"}: {func() any { return &appsv1.Deployment{} }, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
		t := &o.(*appsv1.Deployment).Spec.Template
		return &t.ObjectMeta, &t.Spec
	}},
	{"apps/v1", "StatefulSet"}: {func() any { return &appsv1.StatefulSet{} }, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
		t := &o.(*appsv1.StatefulSet).Spec.Template
		return &t.ObjectMeta, &t.Spec
	}},
	{"apps/v1", "DaemonSet"}: {func() any { return &appsv1.DaemonSet{} }, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
		t := &o.(*appsv1.DaemonSet).Spec.Template
		return &t.ObjectMeta, &t.Spec
	}},
	{"apps/v1", "ReplicaSet"}: {func() any { return &appsv1.ReplicaSet{} }, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
		t := &o.(*appsv1.ReplicaSet).Spec.Template
		return &t.ObjectMeta, &t.Spec
	}},
	{"batch/v1", "Job"}: {func() any { return &batchv1.Job{} }, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
		t := &o.(*batchv1.Job).Spec.Template
		return &t.ObjectMeta, &t.Spec
	}},
	{"batch/v1", "CronJob"}: {func() any { return &batchv1.CronJob{} }, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
		t := &o.(*batchv1.CronJob).Spec.JobTemplate.Spec.Template
		return &t.ObjectMeta, &t.Spec
	}},
}

// Supported reports whether apiVersion/kind is a workload Patch injects.
func Supported(apiVersion, kind string) bool {
	_, ok := workloads[[2]string{apiVersion, kind}]
	return ok
}

// Patch computes the injection of one object, given as the JSON the API
// server sends (or a manifest's document as JSON): an RFC 6902 patch
// against raw (nil when nothing changes), what was done, or an error:
// ErrUnsupportedKind, ErrMalformed (wrapped), or an *Error whose Policy
// says whether to refuse the object. The patch is computed in full before
// it is returned, so an object is never half-injected.
func (c *Config) Patch(apiVersion, kind string, raw []byte, scope Scope) ([]byte, Outcome, error) {
	w, ok := workloads[[2]string{apiVersion, kind}]
	if !ok {
		return nil, Outcome{}, fmt.Errorf("%s %s: %w", apiVersion, kind, ErrUnsupportedKind)
	}
	obj := w.new()
	// Case-sensitive, as the API server decodes; fields these types do
	// not know are ignored here and, since the patch names only what
	// changed, kept in the object.
	strictErrs, err := kjson.UnmarshalStrict(raw, obj, kjson.DisallowDuplicateFields)
	if err != nil {
		return nil, Outcome{}, fmt.Errorf("%w: %s: %v", ErrMalformed, kind, err)
	}
	if len(strictErrs) > 0 {
		return nil, Outcome{}, fmt.Errorf("%w: %s: %v", ErrMalformed, kind, strictErrs[0])
	}
	before, err := json.Marshal(obj)
	if err != nil {
		return nil, Outcome{}, err
	}
	meta, spec := w.template(obj)
	out, err := c.Pod(meta, spec, scope)
	if err != nil || !out.Injected {
		return nil, out, err
	}
	after, err := json.Marshal(obj)
	if err != nil {
		return nil, Outcome{}, err
	}
	patch, err := diffJSON(before, after)
	if err != nil {
		return nil, Outcome{}, err
	}
	return patch, out, nil
}
