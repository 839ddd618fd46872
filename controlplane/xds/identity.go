package xds

import (
	"crypto/x509"
	"strings"
)

// NodeIDs are the xDS node ids a verified client certificate may claim.
//
// The identity rule: a certificate with SPIFFE ids
// spiffe://<trust domain>/ns/<namespace>/pod/<name> among its URI SANs
// (in trustDomain, when it is set) names the nodes "<namespace>/<name>",
// which is the node id an injected sidecar gives itself
// (${POD_NAMESPACE}/${POD_NAME}); cert-manager's csi-driver, for one,
// issues such certificates per pod. A certificate without a SPIFFE id at
// all names one node, its subject's common name (for data planes
// outside Kubernetes: node_id: extauthz-1, CN=extauthz-1). Other SPIFFE
// ids (a service account's, another trust domain's) name no node, and a
// certificate with any SPIFFE id is never named by its common name; DNS
// names name no node.
func NodeIDs(cert *x509.Certificate, trustDomain string) []string {
	var ids []string
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if u.Opaque != "" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.RawPath != "" {
			continue // not a SPIFFE id (SPIFFE ID §2): no escapes either
		}
		if trustDomain != "" && u.Host != trustDomain {
			continue
		}
		seg := strings.Split(u.Path, "/")
		if len(seg) != 5 || seg[0] != "" || seg[1] != "ns" || seg[3] != "pod" || seg[2] == "" || seg[4] == "" {
			continue
		}
		ids = append(ids, seg[2]+"/"+seg[4])
	}
	if len(ids) > 0 || hasSPIFFE(cert) {
		return ids
	}
	if cn := cert.Subject.CommonName; cn != "" {
		return []string{cn}
	}
	return nil
}

// hasSPIFFE reports whether the certificate carries a SPIFFE id: such a
// certificate is named by its pod ids only, never by its common name.
func hasSPIFFE(cert *x509.Certificate) bool {
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			return true
		}
	}
	return false
}
