package inject

import (
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Names of what the injection adds to a pod. Strip finds earlier
// injections by them.
const (
	// SidecarName is the injected container's name.
	SidecarName = "tenantguard-sidecar"
	// ConfigVolume is the Secret volume holding the sidecar's configuration.
	ConfigVolume = "tenantguard-config"
	// StateVolume is the sidecar's writable directory (the policy cache).
	StateVolume = "tenantguard-state"
	// CertsVolume is the pod's own certificate, from cert-manager's
	// csi-driver (Config.Certificates).
	CertsVolume = "tenantguard-certs"
	// TenantEnv is the variable that carries the pod's tenant when the
	// tenant source is a label or an annotation; rewritten URLs refer to it
	// as $(TENANTGUARD_TENANT), which the kubelet expands.
	TenantEnv = "TENANTGUARD_TENANT"
)

// Paths inside the sidecar container.
const (
	// ConfigDir is where the configuration Secret is mounted; its key
	// sidecar.yaml is the sidecar's configuration file, and relative paths
	// in it (token_file, verification keys) resolve here.
	ConfigDir = "/etc/tenantguard/sidecar"
	// ConfigFile is the configuration file the sidecar is started with.
	ConfigFile = ConfigDir + "/sidecar.yaml"
	// StateDir is an emptyDir for the sidecar's policy cache
	// (controlplane.cache_file), so that a restarted sidecar starts from
	// its last good policy while the control plane is unreachable.
	StateDir = "/var/run/tenantguard"
	// CertsDir is where CertsVolume is mounted: tls.crt, tls.key and ca.crt
	// (controlplane.tls's cert_file, key_file and ca_file).
	CertsDir = "/etc/tenantguard/certs"
	// Binary is the tenantguard binary in the image (deploy/Dockerfile).
	Binary = "/usr/local/bin/tenantguard"
	// AdminPortName names the sidecar's admin port (probes, /metrics).
	AdminPortName = "tg-admin"
)

// FailurePolicy says what an injection error does to the pod.
type FailurePolicy string

const (
	// FailurePolicyFail refuses the pod (webhook) or the manifest (offline).
	FailurePolicyFail FailurePolicy = "fail"
	// FailurePolicyIgnore admits the pod without a sidecar, with a warning.
	FailurePolicyIgnore FailurePolicy = "ignore"
)

// Ports are the sidecar's listeners inside the pod. Postgres and Redis
// listen on 127.0.0.1 only; the admin port on every address, for the
// kubelet's probes and Prometheus. Redis 0 means no Redis listener.
type Ports struct {
	Postgres, Redis, Admin int32
}

// Config is the sidecar template: what every injection writes, before a
// pod's annotations adjust it.
type Config struct {
	// Image is the tenantguard image the sidecar runs.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Version is the injector's version, recorded in the status annotation.
	Version string
	// Native runs the sidecar as a Kubernetes native sidecar (an init
	// container with restartPolicy Always, Kubernetes 1.29+); otherwise it
	// is the first regular container, held ready by a postStart hook.
	Native bool
	// ConfigSecret is the default Secret with the sidecar's configuration.
	ConfigSecret string
	// Env are the default variables pointed at the sidecar.
	Env   []string
	Ports Ports
	// Resources are the sidecar's default requests and limits.
	Resources corev1.ResourceRequirements
	// RunAsUser is the sidecar's user id (non-root).
	RunAsUser int64
	// FailurePolicy is the default for pods that do not name one.
	FailurePolicy FailurePolicy
	// ShutdownDelay (fallback layout only) holds the sidecar's SIGTERM back
	// so that the app closes its connections first.
	ShutdownDelay time.Duration
	// StartupTimeout is how long the sidecar may take to become ready
	// (receive its policy) before the kubelet restarts it.
	StartupTimeout time.Duration
	// Certificates, if set, gives every injected sidecar a certificate of
	// its own pod, for mTLS to the control plane; nil: none.
	Certificates *Certificates
}

// Certificates is the per-pod certificate the injection asks cert-manager's
// csi-driver for: issued by Issuer to
// spiffe://<TrustDomain>/ns/<namespace>/pod/<name> (the identity the
// control plane reads as node id "<namespace>/<name>", which the sidecar
// names itself: ${POD_NAMESPACE}/${POD_NAME}), renewed in place by the
// driver, mounted at CertsDir.
type Certificates struct {
	Issuer      string
	IssuerKind  string // Issuer or ClusterIssuer
	TrustDomain string
}

// CSIDriver is cert-manager's csi-driver.
const CSIDriver = "csi.cert-manager.io"

// Default of Certificates.TrustDomain.
const DefaultTrustDomain = "cluster.local"

// volumeAttributes are the csi-driver's request: uri-sans and the file
// group are expanded by the driver (${POD_NAMESPACE}, ${POD_NAME}) and
// set for the sidecar's user.
func (c *Certificates) volumeAttributes(gid int64) map[string]string {
	return map[string]string{
		"csi.cert-manager.io/issuer-name":  c.Issuer,
		"csi.cert-manager.io/issuer-kind":  c.IssuerKind,
		"csi.cert-manager.io/issuer-group": "cert-manager.io",
		"csi.cert-manager.io/uri-sans":     "spiffe://" + c.TrustDomain + "/ns/${POD_NAMESPACE}/pod/${POD_NAME}",
		"csi.cert-manager.io/key-usages":   "digital signature,key encipherment,client auth",
		"csi.cert-manager.io/fs-group":     fmt.Sprint(gid),
	}
}

// Defaults used by DefaultConfig and for fields a configuration leaves out.
const (
	DefaultPostgresPort   = 6432
	DefaultRedisPort      = 6380
	DefaultAdminPort      = 9187
	DefaultRunAsUser      = 65532 // distroless "nonroot"
	DefaultConfigSecret   = "tenantguard-sidecar"
	DefaultImageRepo      = "ghcr.io/tenantguard/tenantguard"
	DefaultShutdownDelay  = 5 * time.Second
	DefaultStartupTimeout = 2 * time.Minute
)

// DefaultConfig is the template with every default, for the image of the
// given version.
func DefaultConfig(version string) Config {
	return Config{
		Image:           DefaultImageRepo + ":" + version,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Version:         version,
		Native:          true,
		ConfigSecret:    DefaultConfigSecret,
		Env:             []string{"DATABASE_URL", "REDIS_URL"},
		Ports:           Ports{Postgres: DefaultPostgresPort, Redis: DefaultRedisPort, Admin: DefaultAdminPort},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
		RunAsUser:      DefaultRunAsUser,
		FailurePolicy:  FailurePolicyFail,
		ShutdownDelay:  DefaultShutdownDelay,
		StartupTimeout: DefaultStartupTimeout,
	}
}

// Validate reports the first setting that would make a broken pod.
func (c *Config) Validate() error {
	switch {
	case c.Image == "":
		return errors.New("sidecar image is empty")
	case c.ConfigSecret == "":
		return errors.New("sidecar config secret is empty")
	case c.Ports.Postgres < 1 || c.Ports.Postgres > 65535:
		return fmt.Errorf("sidecar postgres port %d: not in 1-65535", c.Ports.Postgres)
	case c.Ports.Redis < 0 || c.Ports.Redis > 65535:
		return fmt.Errorf("sidecar redis port %d: not in 0-65535", c.Ports.Redis)
	case c.Ports.Admin < 1 || c.Ports.Admin > 65535:
		return fmt.Errorf("sidecar admin port %d: not in 1-65535", c.Ports.Admin)
	case c.Ports.Postgres == c.Ports.Admin || (c.Ports.Redis != 0 && (c.Ports.Redis == c.Ports.Postgres || c.Ports.Redis == c.Ports.Admin)):
		return errors.New("sidecar ports must differ")
	case c.RunAsUser <= 0:
		return fmt.Errorf("sidecar run_as_user %d: must be a non-root user id", c.RunAsUser)
	case c.FailurePolicy != FailurePolicyFail && c.FailurePolicy != FailurePolicyIgnore:
		return fmt.Errorf("failure policy %q: fail or ignore", c.FailurePolicy)
	case c.StartupTimeout < time.Second:
		return errors.New("sidecar startup timeout must be at least 1s")
	case c.ShutdownDelay < 0:
		return errors.New("sidecar shutdown delay must not be negative")
	}
	if err := checkResources(c.Resources); err != nil {
		return fmt.Errorf("sidecar resources: %w", err)
	}
	if cc := c.Certificates; cc != nil {
		switch {
		case cc.Issuer == "":
			return errors.New("sidecar certificates: the issuer is empty")
		case cc.IssuerKind != "Issuer" && cc.IssuerKind != "ClusterIssuer":
			return fmt.Errorf("sidecar certificates: issuer kind %q: Issuer or ClusterIssuer", cc.IssuerKind)
		case cc.TrustDomain == "":
			return errors.New("sidecar certificates: the trust domain is empty")
		}
	}
	return nil
}

// checkResources refuses a request above its limit, which the API server
// would refuse too, with a less helpful message.
func checkResources(r corev1.ResourceRequirements) error {
	for name, req := range r.Requests {
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
			return fmt.Errorf("%s request %s is above its limit %s", name, req.String(), lim.String())
		}
	}
	return nil
}
