package kubeapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestClient(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			return
		}
		switch r.URL.Path {
		case "/version":
			_, _ = w.Write([]byte(`{"major":"1","minor":"29+","gitVersion":"v1.29.4-gke.1"}`))
		case "/api/v1/namespaces/x/secrets/missing":
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","message":"secrets \"missing\" not found","code":404}`))
		case "/api/v1/namespaces/x/secrets":
			if r.Header.Get("Content-Type") != JSON {
				w.WriteHeader(415)
				return
			}
			w.WriteHeader(409)
			_, _ = w.Write([]byte(`{"kind":"Status","reason":"AlreadyExists","message":"exists","code":409}`))
		default:
			w.WriteHeader(500)
			_, _ = w.Write([]byte("not a Status"))
		}
	}))
	defer srv.Close()
	c := New(srv.URL, "tok", srv.Client())
	ctx := context.Background()
	major, minor, err := c.ServerVersion(ctx)
	if err != nil || major != 1 || minor != 29 {
		t.Fatalf("version %d.%d %v", major, minor, err)
	}
	err = c.Do(ctx, http.MethodGet, "/api/v1/namespaces/x/secrets/missing", "", nil, nil)
	if !IsNotFound(err) || IsConflict(err) || !strings.Contains(err.Error(), `secrets "missing" not found`) {
		t.Fatalf("404: %v", err)
	}
	err = c.Do(ctx, http.MethodPost, "/api/v1/namespaces/x/secrets", JSON, map[string]string{"a": "b"}, nil)
	if !IsConflict(err) {
		t.Fatalf("409: %v", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/other", "", nil, nil); err == nil || IsNotFound(err) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("500: %v", err)
	}
	if _, _, err := New(srv.URL, "wrong", srv.Client()).ServerVersion(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("401: %v", err)
	}
}

func TestInClusterOutsideAPod(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := InCluster(); err == nil || !strings.Contains(err.Error(), "not running in a Kubernetes pod") {
		t.Fatalf("InCluster: %v", err)
	}
	t.Setenv("POD_NAMESPACE", "tenantguard")
	if ns, err := PodNamespace(); err != nil || ns != "tenantguard" {
		t.Fatalf("PodNamespace %q %v", ns, err)
	}
}
