package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/inject"
)

// certManagerObject is what deploy/kubernetes/certs holds of cert-manager's
// kinds, decoded strictly (cert-manager's Go types would bring its module).
type certManagerObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace,omitempty"`
	} `json:"metadata"`
	Spec struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
		IsCA       bool   `json:"isCA,omitempty"`
		CommonName string `json:"commonName,omitempty"`
		SecretName string `json:"secretName,omitempty"`
		Duration   string `json:"duration,omitempty"`
		PrivateKey *struct {
			Algorithm string `json:"algorithm"`
			Size      int    `json:"size"`
		} `json:"privateKey,omitempty"`
		IssuerRef *struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef,omitempty"`
	} `json:"spec"`
}

func readCertManager(t *testing.T, data []byte) []certManagerObject {
	t.Helper()
	r := apiyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []certManagerObject
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var o certManagerObject
		if err := yaml.UnmarshalStrict(doc, &o); err != nil {
			t.Fatalf("strict decode: %v\n%s", err, doc)
		}
		if o.APIVersion != "cert-manager.io/v1" {
			t.Fatalf("%s %s: apiVersion %q", o.Kind, o.Metadata.Name, o.APIVersion)
		}
		out = append(out, o)
	}
}

// caIssuer is the ClusterIssuer every csi-driver volume names.
const caIssuer = "tenantguard-ca"

// checkCertManager: the issuer chain is whole: the CA ClusterIssuer reads
// the Secret of a CA Certificate, in cert-manager's namespace, issued by a
// self-signed ClusterIssuer of the same file.
func checkCertManager(t *testing.T, path string, data []byte) {
	if strings.HasSuffix(path, "kustomization.yaml") {
		return
	}
	byName := map[string]certManagerObject{}
	for _, o := range readCertManager(t, data) {
		byName[o.Kind+"/"+o.Metadata.Name] = o
	}
	ca, ok := byName["ClusterIssuer/"+caIssuer]
	if !ok || ca.Spec.CA == nil {
		t.Fatalf("no CA ClusterIssuer %s", caIssuer)
	}
	var cert *certManagerObject
	for _, o := range byName {
		if o.Kind == "Certificate" && o.Spec.SecretName == ca.Spec.CA.SecretName {
			cert = &o
		}
	}
	switch {
	case cert == nil:
		t.Fatalf("no Certificate writes the CA's Secret %s", ca.Spec.CA.SecretName)
	case !cert.Spec.IsCA || cert.Metadata.Namespace != "cert-manager":
		t.Fatalf("the CA Certificate %+v: want isCA, in cert-manager's namespace (where a ClusterIssuer reads Secrets)", cert)
	case cert.Spec.IssuerRef == nil || byName["ClusterIssuer/"+cert.Spec.IssuerRef.Name].Spec.SelfSigned == nil:
		t.Fatalf("the CA is issued by %+v, not this file's self-signed ClusterIssuer", cert.Spec.IssuerRef)
	}
}

// csiVolume is a pod's volume from cert-manager's csi-driver, and where a
// container mounts it.
type csiVolume struct {
	attrs     map[string]string
	mountPath string
}

// csiVolumes are a pod's csi-driver volumes, mounted by its first
// container (or the named one).
func csiVolumes(t *testing.T, spec corev1.PodSpec, container string) []csiVolume {
	t.Helper()
	var out []csiVolume
	for _, v := range spec.Volumes {
		if v.CSI == nil {
			continue
		}
		if v.CSI.Driver != inject.CSIDriver {
			t.Errorf("volume %s: driver %s", v.Name, v.CSI.Driver)
		}
		cv := csiVolume{attrs: v.CSI.VolumeAttributes}
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			if container != "" && c.Name != container {
				continue
			}
			for _, m := range c.VolumeMounts {
				if m.Name == v.Name {
					cv.mountPath = m.MountPath
				}
			}
		}
		out = append(out, cv)
	}
	return out
}

// expand is csi-driver's expansion of ${POD_NAMESPACE} and ${POD_NAME}.
func expand(s, ns, pod string) string {
	return strings.NewReplacer("${POD_NAMESPACE}", ns, "${POD_NAME}", pod).Replace(s)
}

// nodeIDsOf are the node ids the control plane reads from a certificate
// the csi-driver issues with attrs, for pod ns/name.
func nodeIDsOf(t *testing.T, attrs map[string]string, trustDomain, ns, pod string) []string {
	t.Helper()
	c := &x509.Certificate{}
	for _, u := range strings.Split(attrs["csi.cert-manager.io/uri-sans"], ",") {
		if u == "" {
			continue
		}
		pu, err := url.Parse(expand(strings.TrimSpace(u), ns, pod))
		if err != nil {
			t.Fatal(err)
		}
		c.URIs = append(c.URIs, pu)
	}
	return xds.NodeIDs(c, trustDomain)
}

func dnsNames(attrs map[string]string) []string {
	var out []string
	for _, n := range strings.Split(attrs["csi.cert-manager.io/dns-names"], ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// TestIdentitiesLineUp: what each pod's certificate says, what its
// configuration claims, and what its peers check, agree. Every csi-driver
// volume (the control plane, ext_authz, the edge Envoy, the bootstrap Job,
// each injected sidecar) asks the CA issuer of kubernetes/certs; the
// certificate an injected sidecar gets and ext_authz's name, by the
// control plane's identity rule, exactly the node id their configuration
// claims (${POD_NAMESPACE}/${POD_NAME}); the control plane's certificate
// names the address data planes and Envoy dial, ext_authz's the name
// Envoy checks; every file a configuration names lies in a mounted
// certificate volume.
func TestIdentitiesLineUp(t *testing.T) {
	data, err := os.ReadFile("kubernetes/certs/issuer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	issuers := map[string]bool{}
	for _, o := range readCertManager(t, data) {
		if o.Kind == "ClusterIssuer" {
			issuers[o.Metadata.Name] = true
		}
	}
	r := render(t, "kubernetes/base")
	injCfg := injectorConfig(t, r)
	if injCfg.Sidecar.Certificates == nil {
		t.Fatal("the injector gives sidecars no certificate")
	}
	injected, _ := injectPod(t, injCfg.Sidecar)
	jobData, err := os.ReadFile("kubernetes/examples/bootstrap-job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	job := decodeObjects(t, jobData)[0].(*batchv1.Job)
	pods := map[string][]csiVolume{
		"controlplane": csiVolumes(t, get[*appsv1.Deployment](t, r, "Deployment", "tenantguard-controlplane").Spec.Template.Spec, ""),
		"extauthz":     csiVolumes(t, get[*appsv1.Deployment](t, r, "Deployment", "tenantguard-extauthz").Spec.Template.Spec, ""),
		"edge":         csiVolumes(t, get[*appsv1.Deployment](t, r, "Deployment", "tenantguard-edge").Spec.Template.Spec, ""),
		"bootstrap":    csiVolumes(t, job.Spec.Template.Spec, ""),
		"sidecar":      csiVolumes(t, injected, inject.SidecarName),
	}
	for pod, vols := range pods {
		if len(vols) != 1 {
			t.Fatalf("%s: %d csi-driver volumes, want 1", pod, len(vols))
		}
		a := vols[0].attrs
		if !issuers[a["csi.cert-manager.io/issuer-name"]] || a["csi.cert-manager.io/issuer-kind"] != "ClusterIssuer" || a["csi.cert-manager.io/issuer-group"] != "cert-manager.io" {
			t.Errorf("%s asks %s %s, not a ClusterIssuer of kubernetes/certs", pod, a["csi.cert-manager.io/issuer-kind"], a["csi.cert-manager.io/issuer-name"])
		}
		if a["csi.cert-manager.io/fs-group"] != "65532" || vols[0].mountPath == "" {
			t.Errorf("%s: fs-group %q (the containers' group is 65532), mounted at %q", pod, a["csi.cert-manager.io/fs-group"], vols[0].mountPath)
		}
	}

	cpData, _ := os.ReadFile("kubernetes/config/controlplane.yaml")
	policy, _ := os.ReadFile("kubernetes/config/policy.yaml")
	cp, err := config.LoadControlPlane(withFiles(t, "controlplane.yaml", cpData, map[string][]byte{"policy.yaml": policy}))
	if err != nil {
		t.Fatal(err)
	}
	scData, _ := os.ReadFile("kubernetes/config/sidecar.yaml")
	eaData, _ := os.ReadFile("kubernetes/config/extauthz.yaml")
	k, err := tokenKey()
	if err != nil {
		t.Fatal(err)
	}
	// withFiles names the pod tenantguard/tenantguard-extauthz-7d9f-x2k4.
	ea, err := config.LoadExtAuthz(withFiles(t, "extauthz.yaml", eaData, map[string][]byte{"signing.key.pem": k}))
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeIDsOf(t, pods["extauthz"][0].attrs, cp.XDSTrustDomain, "tenantguard", "tenantguard-extauthz-7d9f-x2k4"); !slices.Equal(got, []string{ea.ControlPlane.NodeID}) {
		t.Errorf("ext_authz claims node %q; its certificate names %q", ea.ControlPlane.NodeID, got)
	}
	scPath := withFiles(t, "sidecar.yaml", scData, nil)
	t.Setenv("POD_NAMESPACE", "shop")
	t.Setenv("POD_NAME", "orders-5d8c7b9f4-x2k4q")
	sc, err := config.Load(scPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeIDsOf(t, pods["sidecar"][0].attrs, cp.XDSTrustDomain, "shop", "orders-5d8c7b9f4-x2k4q"); !slices.Equal(got, []string{sc.ControlPlane.NodeID}) {
		t.Errorf("an injected sidecar claims node %q; its certificate names %q", sc.ControlPlane.NodeID, got)
	}

	// Names dialled and names certified.
	cpNames, eaNames := dnsNames(pods["controlplane"][0].attrs), dnsNames(pods["extauthz"][0].attrs)
	for who, addr := range map[string]string{"sidecar.yaml": sc.ControlPlane.Address, "extauthz.yaml": ea.ControlPlane.Address} {
		host, _, _ := net.SplitHostPort(addr)
		if !slices.Contains(cpNames, host) {
			t.Errorf("%s dials the control plane as %s, which its certificate (%q) does not name", who, host, cpNames)
		}
	}
	b, _ := os.ReadFile("envoy/envoy.yaml")
	boot := bootstrap(t, b)
	ts := boot.GetStaticResources().GetClusters()[0].GetTransportSocket()
	if ts == nil {
		t.Fatal("the edge Envoy dials the control plane in clear")
	}
	if sni := upstreamTLS(t, ts).GetSni(); !slices.Contains(cpNames, sni) {
		t.Errorf("the edge Envoy checks the control plane as %s; its certificate names %q", sni, cpNames)
	}
	if sn := cp.Envoy.ExtAuthzTLS.ServerName; !slices.Contains(eaNames, sn) {
		t.Errorf("Envoy checks ext_authz as %s; its certificate names %q", sn, eaNames)
	}

	// Files named, files mounted.
	under := func(who, file, mount string) {
		if !strings.HasPrefix(file, mount+"/") {
			t.Errorf("%s names %s, outside its certificate volume %s", who, file, mount)
		}
	}
	var rawCP, rawEA, rawSC struct {
		TLS struct {
			XDS  config.XDSTLSFile      `yaml:"xds"`
			GRPC config.ListenerTLSFile `yaml:"grpc"`
		} `yaml:"tls"`
		ControlPlane struct {
			TLS config.ClientTLSFile `yaml:"tls"`
		} `yaml:"controlplane"`
		Envoy struct {
			ExtAuthzTLS config.ClientTLSFile `yaml:"extauthz_tls"`
		} `yaml:"envoy"`
	}
	for _, x := range []struct {
		data []byte
		out  any
	}{{cpData, &rawCP}, {eaData, &rawEA}, {scData, &rawSC}} {
		if err := yamlv3.Unmarshal(x.data, x.out); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{rawCP.TLS.XDS.CertFile, rawCP.TLS.XDS.KeyFile, rawCP.TLS.XDS.ClientCAFile} {
		under("controlplane.yaml", f, pods["controlplane"][0].mountPath)
	}
	for _, f := range []string{rawEA.TLS.GRPC.CertFile, rawEA.TLS.GRPC.KeyFile, rawEA.ControlPlane.TLS.CAFile, rawEA.ControlPlane.TLS.CertFile, rawEA.ControlPlane.TLS.KeyFile} {
		under("extauthz.yaml", f, pods["extauthz"][0].mountPath)
	}
	for _, f := range []string{rawSC.ControlPlane.TLS.CAFile, rawSC.ControlPlane.TLS.CertFile, rawSC.ControlPlane.TLS.KeyFile} {
		under("sidecar.yaml", f, inject.CertsDir)
		under("sidecar.yaml (bootstrap Job)", f, pods["bootstrap"][0].mountPath)
	}
	under("controlplane.yaml envoy.extauthz_tls", rawCP.Envoy.ExtAuthzTLS.CAFile, pods["edge"][0].mountPath)
	under("envoy.yaml", upstreamTLS(t, ts).GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename(), pods["edge"][0].mountPath)
}

// upstreamTLS is a transport socket's UpstreamTlsContext, checked.
func upstreamTLS(t *testing.T, ts *corev3.TransportSocket) *tlsv3.UpstreamTlsContext {
	t.Helper()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("transport socket %s", ts.GetName())
	}
	return unpack(t, ts.GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
}

// injectPod injects a one-container pod with c and returns its spec.
func injectPod(t *testing.T, c inject.Config) (corev1.PodSpec, []inject.DocumentReport) {
	t.Helper()
	var out bytes.Buffer
	reports, err := c.Manifests(strings.NewReader("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec:\n  containers: [{name: app, image: app}]\n"), &out)
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeObjects(t, out.Bytes())
	return objs[0].(*corev1.Pod).Spec, reports
}

func tokenKey() ([]byte, error) {
	k, err := token.GenerateKey("template")
	if err != nil {
		return nil, err
	}
	return k.MarshalPEM(), nil
}
