// Package kubeapi is the little of the Kubernetes API the injector needs —
// get, create, update and JSON-patch single objects, and the server's
// version — over HTTPS with the pod's service account token. It is not
// client-go: no informers, no caches, no code generation; the objects are
// k8s.io/api types, encoded as JSON.
package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServiceAccountDir is where the kubelet mounts the pod's service account.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// maxResponseBytes bounds an answer from the API server.
const maxResponseBytes = 4 << 20

// Client talks to one API server.
type Client struct {
	base string
	http *http.Client
	// token returns the bearer token for a request; the in-cluster one
	// re-reads the file, as bound tokens are rotated by the kubelet.
	token func() (string, error)
}

// New returns a client of the API server at base (https://host:port) that
// sends token (if not empty) with every request.
func New(base, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{base: strings.TrimSuffix(base, "/"), http: hc, token: func() (string, error) { return token, nil }}
}

// InCluster returns a client of the cluster the process runs in, with its
// pod's service account.
func InCluster() (*Client, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)")
	}
	ca, err := os.ReadFile(filepath.Join(ServiceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("service account CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("service account CA: no certificate in ca.crt")
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        2,
		IdleConnTimeout:     time.Minute,
	}}
	c := New("https://"+net.JoinHostPort(host, port), "", hc)
	tokenFile := filepath.Join(ServiceAccountDir, "token")
	c.token = func() (string, error) {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return "", fmt.Errorf("service account token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return c, nil
}

// PodNamespace is the namespace of the pod the process runs in.
func PodNamespace() (string, error) {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns, nil
	}
	b, err := os.ReadFile(filepath.Join(ServiceAccountDir, "namespace"))
	if err != nil {
		return "", fmt.Errorf("pod namespace: set POD_NAMESPACE or run in a pod: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// StatusError is an answer other than 2xx, with the API server's Status.
type StatusError struct {
	Code    int
	Reason  metav1.StatusReason
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("kubernetes API: %d %s: %s", e.Code, e.Reason, e.Message)
}

// IsNotFound reports whether err is a 404.
func IsNotFound(err error) bool { return code(err) == http.StatusNotFound }

// IsConflict reports whether err is a 409: the object exists already
// (create) or changed since it was read (update).
func IsConflict(err error) bool { return code(err) == http.StatusConflict }

func code(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// Content types of request bodies.
const (
	JSON      = "application/json"
	JSONPatch = "application/json-patch+json"
)

// Do sends one request: in (if not nil) encoded as JSON with contentType,
// the answer decoded into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path, contentType string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", JSON)
	if in != nil {
		req.Header.Set("Content-Type", contentType)
	}
	tok, err := c.token()
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("kubernetes API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("kubernetes API %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Code: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
		var st metav1.Status
		if json.Unmarshal(b, &st) == nil && st.Kind == "Status" {
			se.Reason, se.Message = st.Reason, st.Message
		}
		return se
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("kubernetes API %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// ServerVersion is the API server's major and minor version.
func (c *Client) ServerVersion(ctx context.Context) (major, minor int, err error) {
	var v struct {
		Major, Minor string
	}
	if err := c.Do(ctx, http.MethodGet, "/version", "", nil, &v); err != nil {
		return 0, 0, err
	}
	// Managed clusters report minors like "29+".
	major, err1 := strconv.Atoi(strings.TrimRight(v.Major, "+"))
	minor, err2 := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("kubernetes API: version %q.%q", v.Major, v.Minor)
	}
	return major, minor, nil
}
