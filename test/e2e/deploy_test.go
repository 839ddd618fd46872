package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	apiyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tenantguard/tenantguard/test/deploycheck"
	"github.com/tenantguard/tenantguard/test/harness"
)

var workloadScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, admissionv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

var (
	workloadJSON = k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, workloadScheme, workloadScheme, k8sjson.SerializerOptions{Strict: true})
	workloadYAML = k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, workloadScheme, workloadScheme, k8sjson.SerializerOptions{Strict: true, Yaml: true})
)

// injectorProc is a running `tenantguard injector`.
type injectorProc struct {
	*process
	webhook, admin string
	config         string // its configuration file
	client         *http.Client
}

// startInjector runs the injector binary with a certificate from files
// and waits until it is ready.
func startInjector(t *testing.T) *injectorProc {
	t.Helper()
	_, certFile, keyFile := harness.SelfSignedCert(t)
	p := &injectorProc{webhook: freeAddr(t), admin: freeAddr(t)}
	p.config = filepath.Join(t.TempDir(), "injector.yaml")
	cfg := fmt.Sprintf(`listen: {webhook: %q, admin: %q}
tls: {cert_file: %q, key_file: %q}
sidecar:
  image: registry.example.com/tenantguard:e2e
  native: "true"
shutdown_delay: 4s
drain_timeout: 5s
`, p.webhook, p.admin, certFile, keyFile)
	if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.process = start(t, "injector", "--config", p.config)
	harness.Eventually(t, 30*time.Second, func() error {
		if err := p.exited(); err != nil {
			t.Fatalf("injector exited: %v", err)
		}
		if code, _, err := httpGet(context.Background(), "http://"+p.admin+"/readyz"); err != nil || code != 200 {
			return fmt.Errorf("readyz %d %v", code, err)
		}
		return nil
	})
	ca, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	p.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return p
}

// admit sends obj to the webhook as the API server would and returns
// what the API server would store: the JSON patch applied with its
// JSON-patch library, the result decoded strictly.
func (p *injectorProc) admit(t *testing.T, obj runtime.Object) (runtime.Object, *admissionv1.AdmissionResponse) {
	t.Helper()
	raw, err := runtime.Encode(workloadJSON, obj)
	if err != nil {
		t.Fatal(err)
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "e2e-uid", Operation: admissionv1.Create,
			Kind:   metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
			Object: runtime.RawExtension{Raw: raw}},
	}
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.client.Post("https://"+p.webhook+"/inject/namespace", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out, _, err := workloadJSON.Decode(b, nil, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s: %v", resp.StatusCode, b, err)
	}
	r := out.(*admissionv1.AdmissionReview).Response
	if r.UID != "e2e-uid" || !r.Allowed {
		t.Fatalf("response %+v", r)
	}
	if len(r.Patch) > 0 {
		patch, err := jsonpatch.DecodePatch(r.Patch)
		if err != nil {
			t.Fatal(err)
		}
		if raw, err = patch.Apply(raw); err != nil {
			t.Fatal(err)
		}
	}
	stored, _, err := workloadJSON.Decode(raw, nil, nil)
	if err != nil {
		t.Fatalf("the patched object does not decode strictly: %v", err)
	}
	return stored, r
}

// TestInjectorBinary: the built injector, over TLS, gives every workload
// kind exactly what the built `tenantguard inject` writes for it with the
// same configuration; on SIGTERM it stops being ready, keeps answering
// for its shutdown delay, and exits 0.
func TestInjectorBinary(t *testing.T) {
	inj := startInjector(t)
	_, file, _, _ := goruntime.Caller(0)
	testdata := filepath.Join(filepath.Dir(file), "..", "..", "internal", "inject", "testdata")
	names := []string{"pod.yaml", "deployment.yaml", "statefulset.yaml", "daemonset.yaml", "job.yaml", "cronjob.yaml", "fallback.yaml", "optout.yaml", "wrong-version.yaml"}
	// One run of the binary for every document (a race-enabled start
	// costs a second).
	var all bytes.Buffer
	for _, name := range names {
		in, err := os.ReadFile(filepath.Join(testdata, name))
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString("---\n")
		all.Write(in)
	}
	offline := splitDocs(t, run(t, nil, all.Bytes(), "inject", "-f", "-", "--config", inj.config))
	if len(offline) != len(names) {
		t.Fatalf("%d documents out of %d", len(offline), len(names))
	}
	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join(testdata, name))
			if err != nil {
				t.Fatal(err)
			}
			obj, _, err := workloadYAML.Decode(in, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			viaWebhook, resp := inj.admit(t, obj)
			viaCLI, _, err := workloadYAML.Decode(offline[i], nil, nil)
			if err != nil {
				t.Fatalf("offline output: %v", err)
			}
			if !apiequality.Semantic.DeepEqual(viaWebhook, viaCLI) {
				t.Fatalf("webhook and `tenantguard inject` differ; offline:\n%s", offline[i])
			}
			if (name == "optout.yaml") != (len(resp.Patch) == 0) {
				t.Fatalf("patch %s", resp.Patch)
			}
		})
	}
	if v := metricValue(t, context.Background(), "http://"+inj.admin+"/metrics", `tenantguard_injector_requests_total{result="injected"}`); v != 8 {
		t.Errorf("injected = %v, want 8", v)
	}
	if err := inj.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() error {
		if code, _, _ := httpGet(context.Background(), "http://"+inj.admin+"/readyz"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d after SIGTERM", code)
		}
		return nil
	})
	pod, _, err := workloadYAML.Decode([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: late}\nspec:\n  containers: [{name: a, image: a}]\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	inj.admit(t, pod) // still answered during the shutdown delay
	if code := inj.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("injector exit code %d", code)
	}
}

// splitDocs splits a multi-document YAML stream.
func splitDocs(t *testing.T, data []byte) [][]byte {
	t.Helper()
	r := apiyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, doc)
	}
}

// scrape reads a Prometheus endpoint into series name → label names
// (histograms and summaries as Prometheus stores them: _bucket with le,
// _sum, _count).
func scrape(t *testing.T, url string) map[string]map[string]bool {
	t.Helper()
	code, body, err := httpGet(context.Background(), url)
	if err != nil || code != 200 {
		t.Fatalf("scrape %s: %d %v", url, code, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	out := map[string]map[string]bool{}
	add := func(name string, labels map[string]bool) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for l := range labels {
			out[name][l] = true
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]bool{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
			switch f.GetType().String() {
			case "HISTOGRAM":
				add(name+"_count", labels)
				add(name+"_sum", labels)
				labels["le"] = true
				add(name+"_bucket", labels)
			case "SUMMARY":
				add(name+"_count", labels)
				add(name+"_sum", labels)
				labels["quantile"] = true
				add(name, labels)
			default:
				add(name, labels)
			}
		}
	}
	return out
}

// targetLabels are the labels Prometheus attaches to every series of a
// target (deploy/prometheus/scrape.yaml), not exported by the processes.
var targetLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "container": true}

// TestDeployMetricsExported: every metric that deploy/'s alert rules and
// dashboards use is one the processes export, with every label they match
// on. The demo runs the control plane, ext_authz and a sidecar, beside an
// injector; traffic makes the labelled series appear (refusals, auth
// failures, errors, sessions ended, checks, injections); then each
// endpoint is scraped. A selector with job="…" is checked against that
// component's endpoint only.
func TestDeployMetricsExported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	demo, env := startDemo(t)
	inj := startInjector(t)

	// PostgreSQL: statements, a refusal, an error, a failed login.
	acme, err := pgx.Connect(ctx, env["TG_PG_URL_ACME"])
	if err != nil {
		t.Fatal(err)
	}
	defer acme.Close(ctx)
	if _, err := acme.Exec(ctx, "SELECT count(*) FROM orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Exec(ctx, "SET tenantguard.binding = 'globex'"); pgCode(err) != "42501" {
		t.Fatalf("refusal: %v", err)
	}
	if _, err := acme.Exec(ctx, "SELECT 1/0"); pgCode(err) != "22012" {
		t.Fatalf("division by zero: %v", err)
	}
	if c, err := pgx.Connect(ctx, withSecret(t, env["TG_PG_URL_ACME"], "acme", "wrong-password")); err == nil {
		c.Close(ctx)
		t.Fatal("a wrong password logged in")
	}
	// Redis: commands and a refusal.
	opt, err := goredis.ParseURL(env["TG_REDIS_URL_ACME"])
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableIdentity = true
	rc := goredis.NewClient(opt)
	defer rc.Close()
	if err := rc.Get(ctx, "greeting").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ConfigGet(ctx, "*").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("CONFIG GET: %v", err)
	}
	// A session: checks at ext_authz, logins with its token, then its
	// revocation ends them.
	var sess struct {
		SessionID string `json:"session_id"`
		Token     string `json:"token"`
	}
	if code := sessionAPI(t, env, "POST", "/v1/sessions", `{"tenant_id":"acme","user_id":"alice"}`, &sess); code != 201 {
		t.Fatalf("create session: %d", code)
	}
	cc, err := grpc.NewClient(env["TG_EXTAUTHZ_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	authz := authv3.NewAuthorizationClient(cc)
	for _, tok := range []string{sess.Token, ""} {
		if _, err := check(ctx, authz, tok); err != nil {
			t.Fatal(err)
		}
	}
	tokConn, err := pgx.Connect(ctx, withSecret(t, env["TG_PG_URL_ACME"], "acme", sess.Token))
	if err != nil {
		t.Fatalf("login with the session token: %v", err)
	}
	defer tokConn.Close(ctx)
	topt := *opt
	topt.Password = sess.Token
	tr := goredis.NewClient(&topt)
	defer tr.Close()
	if err := tr.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if code := sessionAPI(t, env, "DELETE", "/v1/sessions/"+sess.SessionID, "", nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if metricValue(t, ctx, env["TG_METRICS_URL"], "tenantguard_pg_sessions_ended_total") == 0 ||
			metricValue(t, ctx, env["TG_METRICS_URL"], "tenantguard_redis_sessions_ended_total") == 0 {
			return fmt.Errorf("the revoked session's connections are not ended yet")
		}
		return nil
	})
	// The injector: one injection.
	pod, _, err := workloadYAML.Decode([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: a}]\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	inj.admit(t, pod)

	endpoints := map[string]string{
		"tenantguard-sidecar":      env["TG_METRICS_URL"],
		"tenantguard-extauthz":     env["TG_SESSION_API"] + "/metrics",
		"tenantguard-controlplane": env["TG_ADMIN_API"] + "/metrics",
		"tenantguard-injector":     "http://" + inj.admin + "/metrics",
	}
	byJob := map[string]map[string]map[string]bool{}
	all := map[string]map[string]bool{}
	for job, url := range endpoints {
		byJob[job] = scrape(t, url)
		for name, labels := range byJob[job] {
			if all[name] == nil {
				all[name] = map[string]bool{}
			}
			for l := range labels {
				all[name][l] = true
			}
		}
	}
	root := deploycheck.Root()
	recorded, err := deploycheck.Recorded(root)
	if err != nil {
		t.Fatal(err)
	}
	queries, err := deploycheck.Queries(root)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, q := range queries {
		sels, err := deploycheck.Parse(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
			continue
		}
		for _, s := range sels {
			used[s.Metric] = true
			if recorded[s.Metric] || s.Metric == "up" { // a recording rule's, or Prometheus' own
				continue
			}
			series, where := all, "any component"
			if job, ok := s.Equal["job"]; ok {
				if series, ok = byJob[job]; !ok {
					t.Errorf("%s: job %q is not one of the scrape jobs", q.Where, job)
					continue
				}
				where = job
			}
			labels, ok := series[s.Metric]
			if !ok {
				t.Errorf("%s: %s is not exported by %s", q.Where, s.Metric, where)
				continue
			}
			for _, l := range s.Labels {
				if !labels[l] && !targetLabels[l] {
					t.Errorf("%s: %s has no label %q (it has %v)", q.Where, s.Metric, l, sortedSet(labels))
				}
			}
		}
	}
	t.Logf("%d queries use %d metric names; the processes export %d series names", len(queries), len(used), len(all))
	if err := demo.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := demo.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("demo exit code %d", code)
	}
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return slices.Clip(out)
}

// TestInjectCommand: the fallback layout's hook command waits for a ready
// URL and gives up on one that never is; the offline injector writes
// nothing when one document cannot be injected, and writes -o whole.
func TestInjectCommand(t *testing.T) {
	inj := startInjector(t)
	status := func(stdin []byte, args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(binary, args...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}
	if code, _, stderr := status(nil, "inject", "wait", "--url", "http://"+inj.admin+"/readyz", "--timeout", "10s"); code != 0 {
		t.Fatalf("wait for a ready URL: exit %d: %s", code, stderr)
	}
	if code, _, stderr := status(nil, "inject", "wait", "--url", "http://"+freeAddr(t)+"/readyz", "--timeout", "300ms"); code != 1 || !strings.Contains(stderr, "not ready within") {
		t.Fatalf("wait for a URL that never answers: exit %d: %s", code, stderr)
	}
	if code, _, _ := status(nil, "inject", "wait", "--delay", "10ms"); code != 0 {
		t.Fatalf("delay: exit %d", code)
	}
	good := "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: a, image: a}]\n"
	bad := "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  hostNetwork: true\n  containers: [{name: b, image: b}]\n"
	code, stdout, stderr := status([]byte(good+"---\n"+bad), "inject", "-f", "-", "--config", inj.config)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "document 2: Pod b: the pod uses hostNetwork") {
		t.Fatalf("a document that cannot be injected: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	out := filepath.Join(t.TempDir(), "out.yaml")
	if code, _, stderr := status([]byte(good), "inject", "-f", "-", "-o", out, "--config", inj.config); code != 0 {
		t.Fatalf("-o: exit %d: %s", code, stderr)
	}
	if b, err := os.ReadFile(out); err != nil || !strings.Contains(string(b), "tenantguard-sidecar") {
		t.Fatalf("-o wrote %q (%v)", b, err)
	}
}
