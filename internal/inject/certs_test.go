package inject_test

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tenantguard/tenantguard/internal/inject"
)

// TestCertificates: with certificates configured, the sidecar gets a
// cert-manager csi-driver volume asking for its own pod's SPIFFE id (the
// identity the control plane checks its node id against), readable by
// its user, mounted read-only at CertsDir; injecting again replaces it,
// and an injection without certificates removes it.
func TestCertificates(t *testing.T) {
	cfg := testConfig()
	cfg.Certificates = &inject.Certificates{Issuer: "tenantguard-ca", IssuerKind: "ClusterIssuer", TrustDomain: "cluster.local"}
	out, _ := injectFile(t, cfg, filepath.Join("testdata", "deployment.yaml"))
	spec := decodeDeployment(t, out).Spec.Template.Spec
	var certs []corev1.Volume
	for _, v := range spec.Volumes {
		if v.Name == inject.CertsVolume {
			certs = append(certs, v)
		}
	}
	if len(certs) != 1 || certs[0].CSI == nil {
		t.Fatalf("certificate volumes %+v", certs)
	}
	csi := certs[0].CSI
	want := map[string]string{
		"csi.cert-manager.io/issuer-name":  "tenantguard-ca",
		"csi.cert-manager.io/issuer-kind":  "ClusterIssuer",
		"csi.cert-manager.io/issuer-group": "cert-manager.io",
		"csi.cert-manager.io/uri-sans":     "spiffe://cluster.local/ns/${POD_NAMESPACE}/pod/${POD_NAME}",
		"csi.cert-manager.io/key-usages":   "digital signature,key encipherment,client auth",
		"csi.cert-manager.io/fs-group":     "65532",
	}
	if csi.Driver != inject.CSIDriver || csi.ReadOnly == nil || !*csi.ReadOnly || !reflect.DeepEqual(csi.VolumeAttributes, want) {
		t.Fatalf("csi volume %+v", csi)
	}
	sc := spec.InitContainers[0]
	found := false
	for _, m := range sc.VolumeMounts {
		found = found || m.Name == inject.CertsVolume && m.MountPath == inject.CertsDir && m.ReadOnly
	}
	if !found {
		t.Fatalf("the sidecar does not mount the certificate: %+v", sc.VolumeMounts)
	}

	// Injected again, and then without certificates.
	again, _ := injectText(t, cfg, out)
	if strings.Count(string(again), inject.CertsVolume+"\n") != strings.Count(string(out), inject.CertsVolume+"\n") {
		t.Fatalf("a second injection changed the certificate volume:\n%s", again)
	}
	without, _ := injectText(t, testConfig(), out)
	if strings.Contains(string(without), inject.CertsVolume) {
		t.Fatalf("an injection without certificates kept the volume:\n%s", without)
	}

	for _, bad := range []inject.Certificates{
		{IssuerKind: "ClusterIssuer", TrustDomain: "cluster.local"},
		{Issuer: "ca", IssuerKind: "Certificate", TrustDomain: "cluster.local"},
		{Issuer: "ca", IssuerKind: "Issuer"},
	} {
		c := testConfig()
		c.Certificates = &bad
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// injectText injects a manifest given as text.
func injectText(t *testing.T, c *inject.Config, manifest []byte) ([]byte, []inject.DocumentReport) {
	t.Helper()
	var out bytes.Buffer
	reports, err := c.Manifests(bytes.NewReader(manifest), &out)
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), reports
}
