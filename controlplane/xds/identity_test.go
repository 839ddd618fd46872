package xds_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/controlplane/xds"
)

func TestNodeIDs(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cn          string
		uris        []string
		trustDomain string
		want        []string
	}{
		{"pod id", "", []string{"spiffe://cluster.local/ns/shop/pod/orders-1"}, "", []string{"shop/orders-1"}},
		{"pod id in the trust domain", "", []string{"spiffe://cluster.local/ns/shop/pod/orders-1"}, "cluster.local", []string{"shop/orders-1"}},
		{"pod id in another trust domain", "shop/orders-1", []string{"spiffe://evil.example/ns/shop/pod/orders-1"}, "cluster.local", nil},
		{"two pod ids", "", []string{"spiffe://a/ns/shop/pod/x", "spiffe://a/ns/shop/pod/y"}, "", []string{"shop/x", "shop/y"}},
		{"service account id", "shop/orders-1", []string{"spiffe://cluster.local/ns/shop/sa/orders"}, "", nil},
		{"id with more segments", "", []string{"spiffe://cluster.local/ns/shop/pod/orders-1/extra"}, "", nil},
		{"empty pod name", "", []string{"spiffe://cluster.local/ns/shop/pod/"}, "", nil},
		{"escaped slash", "", []string{"spiffe://cluster.local/ns/shop%2Fother/pod/orders-1"}, "", nil},
		{"query", "", []string{"spiffe://cluster.local/ns/shop/pod/orders-1?x=1"}, "", nil},
		{"common name", "extauthz-1", nil, "", []string{"extauthz-1"}},
		{"common name beside a non-SPIFFE URI", "extauthz-1", []string{"https://example.com/x"}, "", []string{"extauthz-1"}},
		{"nothing", "", nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &x509.Certificate{Subject: pkix.Name{CommonName: tc.cn}}
			for _, u := range tc.uris {
				pu, err := url.Parse(u)
				if err != nil {
					t.Fatal(err)
				}
				c.URIs = append(c.URIs, pu)
			}
			if got := xds.NodeIDs(c, tc.trustDomain); !slices.Equal(got, tc.want) {
				t.Fatalf("NodeIDs = %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzNodeIDs: whatever URI SAN a certificate carries, NodeIDs does not
// panic, and names only "<namespace>/<name>" of a pod id in the trust
// domain, or the common name of a certificate without SPIFFE ids.
func FuzzNodeIDs(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/shop/pod/orders-1", "spiffe://cluster.local/ns/shop/sa/orders", "spiffe://x/ns//pod/a", "spiffe://cluster.local/ns/a%2Fb/pod/c", "https://example.com/", "spiffe:opaque"} {
		f.Add(s, "cluster.local", "cn")
	}
	f.Fuzz(func(t *testing.T, uri, trustDomain, cn string) {
		u, err := url.Parse(uri)
		if err != nil {
			return
		}
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, URIs: []*url.URL{u}}
		for _, id := range xds.NodeIDs(c, trustDomain) {
			if id == cn && u.Scheme != "spiffe" {
				continue
			}
			ns, pod, ok := strings.Cut(id, "/")
			if !ok || ns == "" || pod == "" || strings.Contains(pod, "/") || u.Scheme != "spiffe" || (trustDomain != "" && u.Host != trustDomain) {
				t.Fatalf("NodeIDs(%q, %q) named %q", uri, trustDomain, id)
			}
		}
	})
}
