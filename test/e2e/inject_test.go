package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	apiyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tenantguard/tenantguard/internal/inject"
	"github.com/tenantguard/tenantguard/test/deploycheck"
	"github.com/tenantguard/tenantguard/test/harness"
)

// startWith runs the tenantguard binary with exactly env (a container
// gets only its own variables) and args; like start otherwise.
func startWith(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(binary, args...), done: make(chan error, 1)}
	p.cmd.Env = env
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		err := p.cmd.Wait()
		_ = w.Close()
		p.done <- err
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%v output:\n%s", args, p.output())
		}
	})
	return p
}

// run runs the binary to completion and returns its stdout.
func run(t *testing.T, env []string, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(binary, args...)
	if env != nil {
		cmd.Env = env
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tenantguard %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

// fakePod is what a kubelet knows of a pod: its identity, labels and
// volumes, the cluster's Secrets, and where on this machine each volume
// is (a kubelet would mount it at the container's mountPath).
type fakePod struct {
	name, namespace string
	labels          map[string]string
	annotations     map[string]string
	volumes         []corev1.Volume
	secrets         map[string]map[string][]byte
	dir             string
	// ca plays cert-manager's csi-driver: it issues what a csi volume asks.
	ca *harness.CA
}

// kubeletRef is Kubernetes' $(VAR) reference; $$ escapes a $.
var kubeletRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandRefs expands $(VAR) as the kubelet does: from the variables
// defined earlier; an unknown reference stays as written.
func expandRefs(s string, vars map[string]string) string {
	return kubeletRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// env resolves a container's variables: literals with $(VAR) expanded,
// the downward API's fields, and Secret keys.
func (p *fakePod) env(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			vars[e.Name] = expandRefs(e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			fp := e.ValueFrom.FieldRef.FieldPath
			switch {
			case fp == "metadata.name":
				vars[e.Name] = p.name
			case fp == "metadata.namespace":
				vars[e.Name] = p.namespace
			case strings.HasPrefix(fp, "metadata.labels['"):
				vars[e.Name] = p.labels[strings.TrimSuffix(strings.TrimPrefix(fp, "metadata.labels['"), "']")]
			case strings.HasPrefix(fp, "metadata.annotations['"):
				vars[e.Name] = p.annotations[strings.TrimSuffix(strings.TrimPrefix(fp, "metadata.annotations['"), "']")]
			default:
				t.Fatalf("%s: downward API field %s", e.Name, fp)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := p.secrets[ref.Name][ref.Key]
			if !ok {
				t.Fatalf("%s: no key %s in Secret %s", e.Name, ref.Key, ref.Name)
			}
			vars[e.Name] = string(v)
		default:
			t.Fatalf("%s: unsupported valueFrom", e.Name)
		}
	}
	return vars
}

// mount puts each of the container's volumes in a directory of its own
// and returns mountPath → directory. Secret files are written with every
// absolute path under a mount point rewritten to where it is mounted here
// (the configuration names /var/run/tenantguard, which this test cannot
// create).
func (p *fakePod) mount(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range p.volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = filepath.Join(p.dir, "volumes", m.Name)
		if err := os.MkdirAll(mounts[m.MountPath], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		switch {
		case !ok:
			t.Fatalf("container %s mounts %s, which the pod lacks", c.Name, m.Name)
		case v.Secret != nil:
			s, ok := p.secrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("Secret %s does not exist", v.Secret.SecretName)
			}
			for k, data := range s {
				if err := os.WriteFile(filepath.Join(mounts[m.MountPath], k), []byte(remap(string(data), mounts)), 0o400); err != nil {
					t.Fatal(err)
				}
			}
		case v.EmptyDir != nil:
		case v.CSI != nil && v.CSI.Driver == inject.CSIDriver:
			p.issue(t, mounts[m.MountPath], v.CSI.VolumeAttributes)
		default:
			t.Fatalf("volume %s: unsupported source", m.Name)
		}
	}
	return mounts
}

// issue writes into dir what cert-manager's csi-driver would for attrs:
// tls.crt (with the URI SANs, ${POD_NAMESPACE} and ${POD_NAME} expanded,
// and the DNS names), tls.key and ca.crt.
func (p *fakePod) issue(t *testing.T, dir string, attrs map[string]string) {
	t.Helper()
	if attrs["csi.cert-manager.io/issuer-name"] == "" {
		t.Fatalf("csi volume without an issuer: %v", attrs)
	}
	expand := strings.NewReplacer("${POD_NAMESPACE}", p.namespace, "${POD_NAME}", p.name)
	var spec harness.CertSpec
	for _, u := range strings.Split(attrs["csi.cert-manager.io/uri-sans"], ",") {
		if u = strings.TrimSpace(u); u != "" {
			spec.URIs = append(spec.URIs, expand.Replace(u))
		}
	}
	for _, n := range strings.Split(attrs["csi.cert-manager.io/dns-names"], ",") {
		if n = strings.TrimSpace(n); n != "" {
			spec.DNSNames = append(spec.DNSNames, expand.Replace(n))
		}
	}
	p.ca.Issue(t, dir, "tls", spec)
	b, err := os.ReadFile(p.ca.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), b, 0o400); err != nil {
		t.Fatal(err)
	}
}

func remap(s string, mounts map[string]string) string {
	for from, to := range mounts {
		s = strings.ReplaceAll(s, from+"/", to+"/")
	}
	return s
}

// runContainer starts the binary as the container would run: its args
// (the image's entrypoint is the binary), its variables only, its volumes.
func (p *fakePod) runContainer(t *testing.T, c corev1.Container) *process {
	t.Helper()
	if len(c.Command) != 0 {
		t.Fatalf("container %s overrides the image's entrypoint: %q", c.Name, c.Command)
	}
	mounts := p.mount(t, c)
	var args []string
	for _, a := range c.Args {
		args = append(args, remap(a, mounts))
	}
	var env []string
	for k, v := range p.env(t, c) {
		env = append(env, k+"="+v)
	}
	return startWith(t, env, args...)
}

// probe polls an HTTP probe of the container until it answers 200.
func probe(t *testing.T, c corev1.Container, pr *corev1.Probe, within time.Duration) {
	t.Helper()
	if pr == nil || pr.HTTPGet == nil {
		t.Fatalf("container %s: probe %+v is not HTTP", c.Name, pr)
	}
	port := pr.HTTPGet.Port.IntValue()
	for _, cp := range c.Ports {
		if cp.Name == pr.HTTPGet.Port.StrVal {
			port = int(cp.ContainerPort)
		}
	}
	u := fmt.Sprintf("%s://127.0.0.1:%d%s", strings.ToLower(string(pr.HTTPGet.Scheme)), port, pr.HTTPGet.Path)
	harness.Eventually(t, within, func() error {
		code, _, err := httpGet(context.Background(), u)
		if err != nil || code != 200 {
			return fmt.Errorf("%s: %d %v", u, code, err)
		}
		return nil
	})
}

// strictYAML decodes apps/v1 and core/v1 objects, failing on unknown fields.
var strictYAML = func() runtime.Decoder {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = appsv1.AddToScheme(s)
	return k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, s, s, k8sjson.SerializerOptions{Yaml: true, Strict: true})
}()

func decodeDeployments(t *testing.T, manifest []byte) map[string]*appsv1.Deployment {
	t.Helper()
	out := map[string]*appsv1.Deployment{}
	r := apiyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := strictYAML.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("injected manifest: %v\n%s", err, doc)
		}
		if d, ok := obj.(*appsv1.Deployment); ok {
			out[d.Name] = d
		}
	}
}

// editYAML decodes a YAML document, lets edit change it, and encodes it.
func editYAML(t *testing.T, data []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func section(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

const appManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  template:
    metadata:
      labels: {app: orders}
    spec:
      containers:
        - name: app
          image: registry.example.com/orders:1.4.2
          env:
            - name: DB_PASSWORD
              valueFrom: {secretKeyRef: {name: orders-db, key: password}}
            - name: DATABASE_URL
              value: postgres://acme:$(DB_PASSWORD)@orders-db.shop.svc.cluster.local:5432/app?sslmode=require&application_name=orders
            - name: REDIS_URL
              value: rediss://acme:$(DB_PASSWORD)@cache.shop.svc.cluster.local:6379/0
---
# One tenant per pod: the tenant is the pod's label.
apiVersion: apps/v1
kind: Deployment
metadata: {name: globex-worker, namespace: shop}
spec:
  selector: {matchLabels: {app: worker}}
  template:
    metadata:
      labels: {app: worker, customer: globex}
      annotations:
        tenantguard.io/tenant-source: label:customer
        tenantguard.io/env: DATABASE_URL
    spec:
      containers:
        - name: worker
          image: registry.example.com/worker:1.0.0
          env:
            - name: GLOBEX_PASSWORD
              valueFrom: {secretKeyRef: {name: globex-db, key: password}}
            - name: DATABASE_URL
              value: postgres://whoever:$(GLOBEX_PASSWORD)@orders-db.shop.svc.cluster.local:5432/app
`

// TestInjectedSidecarForReal: `tenantguard inject` injects an app; the
// sidecar container it wrote is started as a kubelet would start it (its
// args, its environment with the downward API and Secret references
// resolved, its Secret and emptyDir volumes, its probes) with the
// configuration made from deploy/'s template, against a real PostgreSQL,
// redis-server and control plane (made from deploy/'s templates too).
// Clients using the app's rewritten DATABASE_URL and REDIS_URL reach
// their tenant's rows and keys only, the sidecar names itself by its pod,
// and it stops cleanly on SIGTERM.
func TestInjectedSidecarForReal(t *testing.T) {
	pg, rs := harness.Postgres(t), harness.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, q := range []string{"CREATE ROLE inject_app LOGIN PASSWORD 'inject_pw' NOSUPERUSER NOBYPASSRLS", "CREATE DATABASE inject_app", "CREATE DATABASE inject_cp"} {
		if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
			t.Fatal(err)
		}
	}
	if err := pg.Exec(ctx, "inject_cp", "DROP SCHEMA IF EXISTS tenantguard_cp CASCADE"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "inject_app", `CREATE TABLE IF NOT EXISTS public.orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL, amount numeric NOT NULL DEFAULT 0);
		DELETE FROM public.orders;
		INSERT INTO public.orders (tenant_id, item) VALUES ('acme', 'anvil'), ('acme', 'rocket skates'), ('globex', 'hammock')`); err != nil {
		t.Fatal(err)
	}
	root := deploycheck.Root()
	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// The control plane, from deploy/'s templates, with a certificate
	// from the CA that also stands in for cert-manager below.
	ca := harness.NewCA(t, "e2e cluster CA")
	cpTLS := filepath.Join(dir, "cp-tls")
	if err := os.Mkdir(cpTLS, 0o700); err != nil {
		t.Fatal(err)
	}
	ca.Issue(t, cpTLS, "tls", harness.ServerSpec("tenantguard-controlplane"))
	copyInto(t, ca.File, filepath.Join(cpTLS, "ca.crt"))
	write("admin.token", []byte(e2eAdminToken))
	run(t, nil, nil, "controlplane", "auditkey", "--out", filepath.Join(dir, "audit.key"))
	write("policy.yaml", []byte(strings.NewReplacer("CHANGE-ME-acme-password", "acme-secret-1", "CHANGE-ME-globex-password", "globex-secret-1").Replace(string(read("kubernetes/config/policy.yaml")))))
	xdsAddr, cpAdmin := freeAddr(t), freeAddr(t)
	cpCfg := write("controlplane.yaml", editYAML(t, read("kubernetes/config/controlplane.yaml"), func(m map[string]any) {
		m["listen"] = map[string]any{"xds": xdsAddr, "admin": cpAdmin}
		m["database"] = pg.AdminURL("inject_cp")
		x := section(section(m, "tls"), "xds")
		x["cert_file"], x["key_file"], x["client_ca_file"] = filepath.Join(cpTLS, "tls.crt"), filepath.Join(cpTLS, "tls.key"), filepath.Join(cpTLS, "ca.crt")
	}))
	cp := start(t, "controlplane", "--config", cpCfg)
	harness.Eventually(t, 60*time.Second, func() error {
		if err := cp.exited(); err != nil {
			t.Fatalf("controlplane exited: %v", err)
		}
		if code, _, err := httpGet(ctx, "http://"+cpAdmin+"/readyz"); err != nil || code != 200 {
			return fmt.Errorf("readyz %d %v", code, err)
		}
		return nil
	})

	// Inject the app offline, with the injector's configuration from
	// deploy/ on free ports.
	ports := map[string]int{}
	for _, k := range []string{"postgres", "redis", "admin"} {
		_, p, _ := net.SplitHostPort(freeAddr(t))
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatal(err)
		}
		ports[k] = n
	}
	injCfg := write("injector.yaml", editYAML(t, read("kubernetes/base/injector/injector.yaml"), func(m map[string]any) {
		sc := section(m, "sidecar")
		sc["ports"] = map[string]any{"postgres": ports["postgres"], "redis": ports["redis"], "admin": ports["admin"]}
		sc["native"] = "true"
	}))
	injected := run(t, nil, []byte(appManifest), "inject", "-f", "-", "--config", injCfg)
	deployments := decodeDeployments(t, injected)
	orders, worker := deployments["orders"], deployments["globex-worker"]
	if orders == nil || worker == nil {
		t.Fatalf("injected manifest:\n%s", injected)
	}
	spec := orders.Spec.Template.Spec
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != inject.SidecarName ||
		spec.InitContainers[0].RestartPolicy == nil || *spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("no native sidecar in:\n%s", injected)
	}
	sidecar := spec.InitContainers[0]

	// The app namespace's Secrets: the sidecar's configuration from
	// deploy/'s template, and the apps' passwords.
	bindingKey := make([]byte, 32)
	_, _ = rand.Read(bindingKey)
	sidecarYAML := editYAML(t, read("kubernetes/config/sidecar.yaml"), func(m map[string]any) {
		l := section(m, "listen")
		for _, k := range []string{"postgres", "redis", "admin"} {
			host, _, _ := net.SplitHostPort(l[k].(string))
			l[k] = net.JoinHostPort(host, fmt.Sprint(ports[k]))
		}
		db := section(m, "postgres")["databases"].([]any)[0].(map[string]any)
		db["url"] = fmt.Sprintf("postgres://inject_app:inject_pw@127.0.0.1:%d/inject_app?sslmode=disable", pg.Port())
		section(m, "redis")["upstream"] = rs.Addr()
		section(m, "isolation")["binding_key"] = hex.EncodeToString(bindingKey)
		section(m, "controlplane")["address"] = xdsAddr
	})
	pod := &fakePod{
		name: "orders-5d8c7b9f4-x2k4q", namespace: "shop", dir: t.TempDir(),
		labels: orders.Spec.Template.Labels, annotations: orders.Spec.Template.Annotations,
		volumes: spec.Volumes, ca: ca,
		secrets: map[string]map[string][]byte{
			"tenantguard-sidecar": {"sidecar.yaml": sidecarYAML},
			"orders-db":           {"password": []byte("acme-secret-1")},
			"globex-db":           {"password": []byte("globex-secret-1")},
		},
	}

	// Row-level isolation, as deploy/'s bootstrap Job installs it: the
	// sidecar's configuration and the tables' owner.
	bootstrapEnv := []string{"POD_NAME=bootstrap", "POD_NAMESPACE=shop"}
	cfgDir := filepath.Join(t.TempDir(), "bootstrap")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The Job's own csi-driver volume (deploy/kubernetes/examples).
	bootstrapCerts := filepath.Join(t.TempDir(), "certs")
	if err := os.MkdirAll(bootstrapCerts, 0o700); err != nil {
		t.Fatal(err)
	}
	(&fakePod{name: "bootstrap", namespace: "shop", ca: ca}).issue(t, bootstrapCerts, map[string]string{
		"csi.cert-manager.io/issuer-name": "tenantguard-ca", "csi.cert-manager.io/uri-sans": "spiffe://cluster.local/ns/${POD_NAMESPACE}/pod/${POD_NAME}"})
	for k, v := range pod.secrets["tenantguard-sidecar"] {
		text := strings.NewReplacer(inject.StateDir+"/", cfgDir+"/", inject.CertsDir+"/", bootstrapCerts+"/").Replace(string(v))
		if err := os.WriteFile(filepath.Join(cfgDir, k), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run(t, bootstrapEnv, nil, "pg", "bootstrap", "--config", filepath.Join(cfgDir, "sidecar.yaml"), "--admin-url", pg.AdminURL("inject_app"))

	// The kubelet's part: start the sidecar, wait for its startup probe
	// (the app's containers start only then), check the others.
	sc := pod.runContainer(t, sidecar)
	probe(t, sidecar, sidecar.StartupProbe, 60*time.Second)
	probe(t, sidecar, sidecar.ReadinessProbe, 5*time.Second)
	probe(t, sidecar, sidecar.LivenessProbe, 5*time.Second)

	// The app, with the variables the injection rewrote.
	appEnv := pod.env(t, spec.Containers[0])
	dbURL := appEnv["DATABASE_URL"]
	if u, err := url.Parse(dbURL); err != nil || u.Host != fmt.Sprintf("127.0.0.1:%d", ports["postgres"]) || u.Query().Get("sslmode") != "disable" || u.User.Username() != "acme" {
		t.Fatalf("rewritten DATABASE_URL %q", dbURL)
	}
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("the app's DATABASE_URL: %v", err)
	}
	defer c.Close(ctx)
	var tenants []string
	rows, err := c.Query(ctx, "SELECT tenant_id FROM orders ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var tn string
		if err := rows.Scan(&tn); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, tn)
	}
	if rows.Err() != nil || strings.Join(tenants, ",") != "acme,acme" {
		t.Fatalf("acme's app sees rows of %v (%v)", tenants, rows.Err())
	}
	opt, err := goredis.ParseURL(appEnv["REDIS_URL"])
	if err != nil {
		t.Fatalf("the app's REDIS_URL %q: %v", appEnv["REDIS_URL"], err)
	}
	opt.DisableIdentity = true
	r := goredis.NewClient(opt)
	defer r.Close()
	if err := r.Set(ctx, "inject-e2e", "hello", 0).Err(); err != nil {
		t.Fatalf("the app's REDIS_URL: %v", err)
	}
	direct := goredis.NewClient(&goredis.Options{Addr: rs.Addr(), DisableIdentity: true})
	defer direct.Close()
	if v, err := direct.Get(ctx, "t:acme:inject-e2e").Result(); err != nil || v != "hello" {
		t.Fatalf("acme's key upstream: %q %v", v, err)
	}

	// The worker pod's tenant comes from its label: through the same
	// sidecar layout it is globex, whatever user its URL named.
	wpod := *pod
	wpod.labels, wpod.annotations = worker.Spec.Template.Labels, worker.Spec.Template.Annotations
	wURL := wpod.env(t, worker.Spec.Template.Spec.Containers[0])["DATABASE_URL"]
	wc, err := pgx.Connect(ctx, wURL)
	if err != nil {
		t.Fatalf("the worker's DATABASE_URL %q: %v", wURL, err)
	}
	var items []string
	wrows, err := wc.Query(ctx, "SELECT item FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	for wrows.Next() {
		var it string
		_ = wrows.Scan(&it)
		items = append(items, it)
	}
	wc.Close(ctx)
	if strings.Join(items, ",") != "hammock" {
		t.Fatalf("the globex worker sees %v", items)
	}

	// The sidecar named itself to the control plane by its pod.
	if out := sc.output(); !strings.Contains(out, "node=shop/"+pod.name) {
		t.Fatalf("no log line names node shop/%s:\n%s", pod.name, out)
	}
	c.Close(ctx)
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sc.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("sidecar exit code %d after SIGTERM", code)
	}
}
