// Package inject adds the tenantguard sidecar to a pod template: the pure
// mutation shared by the offline `tenantguard inject` command and the
// mutating admission webhook (`tenantguard injector`), as istioctl
// kube-inject and Istio's webhook share theirs.
//
// The mutation is computed on typed k8s.io/api objects and returned as an
// RFC 6902 JSON patch against the object's own JSON (Patch), so the
// webhook answers with it and the offline command applies the same patch
// to each manifest: both forms give the same result for the same pod.
//
// Injection is idempotent. Every run first strips what an earlier
// injection added (the sidecar container, wherever it is, its volumes and
// the tenant variable) and then injects afresh: injecting twice gives the
// same object as once, and a pod carrying a sidecar of another version or
// layout is updated, not given a second one.
//
// With Config.Certificates the sidecar also gets its own pod's certificate
// for mTLS to the control plane: a volume of cert-manager's csi-driver
// (CertsVolume, mounted read-only at CertsDir) asking the configured
// issuer for spiffe://<trust domain>/ns/${POD_NAMESPACE}/pod/${POD_NAME},
// which the driver expands, issues and renews in place. That is the
// identity the control plane's xDS server reads as node id
// "<namespace>/<name>", the node id the sidecar's configuration gives
// itself (${POD_NAMESPACE}/${POD_NAME}).
//
// # Annotations (on the pod or the pod template)
//
//	tenantguard.io/inject          "true" opts in, "false" opts out; opting out wins over the namespace label
//	tenantguard.io/tenant-source   "url" (default: the tenant is the user name in each URL the app holds),
//	                               "label:<key>" or "annotation:<key>": the pod serves one tenant, named by
//	                               its label or annotation; rewritten URLs take their user name from it
//	tenantguard.io/env             comma-separated variables to point at the sidecar (default: the
//	                               injector's list, e.g. DATABASE_URL,REDIS_URL)
//	tenantguard.io/config-secret   the Secret holding the sidecar's configuration (sidecar.yaml)
//	tenantguard.io/cpu, cpu-limit, memory, memory-limit
//	                               the sidecar's resource requests and limits
//	tenantguard.io/failure-policy  "fail" (an injection error refuses the pod) or "ignore" (the pod is
//	                               admitted without a sidecar, with a warning)
//	tenantguard.io/native-sidecar  "true" or "false": override the injector's native-sidecar setting
//
// The injection records what it did in tenantguard.io/status (JSON).
package inject
