package lifecycle_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/controlplane/lifecycle"
	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/internal/lifecycletest"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) {
	code := harness.Run(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var seq atomic.Int64

// fleet is a data plane fleet of one node whose answer the test sets.
type fleet struct {
	mu    sync.Mutex
	nack  bool
	store *store.Store
}

func (f *fleet) NodeStatus() map[string]xds.NodeStatus {
	v, err := f.store.Current(context.Background())
	if err != nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st := xds.NodeStatus{Streams: 1, Policy: true, AckedVersion: fmt.Sprint(v.Version), LastAck: time.Now()}
	if f.nack {
		st = xds.NodeStatus{Streams: 1, Policy: true, AckedVersion: fmt.Sprint(v.Version - 1), LastAck: time.Now().Add(-time.Second),
			NackedVersion: fmt.Sprint(v.Version), LastNack: time.Now(), LastError: "cannot apply"}
	}
	return map[string]xds.NodeStatus{"sidecar-1": st}
}

type env struct {
	up      *lifecycletest.Upstream
	rdb     *goredis.Client
	store   *store.Store
	engine  *workflow.Engine
	svc     *lifecycle.Service
	fleet   *fleet
	archive string
}

// setup builds an application database with acme and globex's data, a
// policy store naming them, and an engine with the lifecycle operations.
func setup(t *testing.T, appURL func(u *lifecycletest.Upstream) string) *env {
	t.Helper()
	pg := harness.Postgres(t)
	n := seq.Add(1)
	up := lifecycletest.Setup(t, pg, fmt.Sprintf("lc_app_%d_%d", os.Getpid(), n))
	rdb := harness.FreshRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cpDB := fmt.Sprintf("lc_cp_%d_%d", os.Getpid(), n)
	if err := pg.CreateDatabase(ctx, cpDB); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, pg.AdminURL(cpDB), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	p, err := policypb.ParseYAML([]byte(lifecycletest.PolicyYAML("acme", "globex", "acme2", "acme3", "acme4")))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Seed(ctx, "test", p); err != nil {
		t.Fatal(err)
	}
	for i, tenant := range []string{"acme", "globex"} {
		up.SeedRows(t, tenant, 20+i*7)
		lifecycletest.SeedKeys(t, rdb, tenant, 30+i*3)
	}
	url := up.AppURL
	if appURL != nil {
		url = appURL(up)
	}
	e := &env{up: up, rdb: rdb, store: st, fleet: &fleet{store: st}, archive: t.TempDir()}
	e.svc, err = lifecycle.New(lifecycle.Config{
		Policy: st, Postgres: lifecycle.NewPostgres(url, up.Binder), Redis: lifecycle.NewRedis(rdb),
		Fleet: e.fleet, ArchiveDir: e.archive, ReadyTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.engine, err = workflow.New(workflow.Options{Store: st, Kinds: e.svc.Kinds(), Lease: 2 * time.Second,
		RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.engine.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })
	return e
}

func (e *env) run(t *testing.T, kind, tenant string, params any, want string) store.Operation {
	t.Helper()
	b, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	op, err := e.engine.Start(context.Background(), kind, tenant, "tester", b)
	if err != nil {
		t.Fatalf("start %s %s: %v", kind, tenant, err)
	}
	harness.Eventually(t, time.Minute, func() error {
		if op, err = e.engine.Get(context.Background(), op.ID); err != nil {
			return err
		}
		if op.Active() {
			return fmt.Errorf("%s %s: still %s at step %d", kind, tenant, op.State, op.Step)
		}
		return nil
	})
	if op.State != want {
		steps, _ := workflow.Steps(op)
		t.Fatalf("%s %s ended %s (want %s): %s\nsteps: %+v", kind, tenant, op.State, want, op.Error, steps)
	}
	return op
}

func result(t *testing.T, op store.Operation) map[string]json.RawMessage {
	t.Helper()
	var r map[string]json.RawMessage
	if err := json.Unmarshal(op.Result, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func tenantsOf(t *testing.T, st *store.Store) []string {
	t.Helper()
	v, err := st.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tn := range v.Policy.GetTenants() {
		out = append(out, tn.GetId())
	}
	return out
}

// readTar returns the archive's files.
func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = b
	}
}

// TestExportImportOffboard: acme's export holds all of acme and nothing of
// globex; an import into a new tenant id gives it the same data under its
// own id; offboarding acme deletes acme's rows and keys only; globex (and
// the imported tenant) stay byte for byte as they were throughout.
func TestExportImportOffboard(t *testing.T) {
	e := setup(t, nil)
	before := lifecycletest.Take(t, e.up, e.rdb)
	if before["acme"] == "" || before["globex"] == "" {
		t.Fatalf("fixture: %v", before)
	}

	// Export.
	exp := e.run(t, lifecycle.KindExport, "acme", struct{}{}, store.OpSucceeded)
	path, ok := e.svc.ArchivePath(exp.ID)
	if !ok {
		t.Fatal("no archive")
	}
	files := readTar(t, path)
	var m lifecycle.Manifest
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	acmeRows := e.up.Counts(t, "acme")
	if m.Tenant != "acme" || len(m.Tables) != 3 || m.Redis == nil {
		t.Fatalf("manifest %+v", m)
	}
	for _, mt := range m.Tables {
		body := files[mt.File]
		sum := sha256.Sum256(body)
		if mt.Rows != acmeRows[mt.Name] || hex.EncodeToString(sum[:]) != mt.SHA256 {
			t.Errorf("%s: %d rows (acme has %d), sha256 %x vs %s", mt.Name, mt.Rows, acmeRows[mt.Name], sum, mt.SHA256)
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			var row map[string]any
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
				t.Fatal(err)
			}
			if row["tenant_id"] != "acme" {
				t.Errorf("%s: a row of %v in acme's export", mt.Name, row["tenant_id"])
			}
		}
	}
	for name, body := range files {
		if bytes.Contains(body, []byte("globex")) {
			t.Errorf("%s mentions globex", name)
		}
	}
	if want := int64(30 + 30/5 + 5); m.Redis.Keys != want {
		t.Errorf("%d keys exported, want %d", m.Redis.Keys, want)
	}
	if err := before.Equal(lifecycletest.Take(t, e.up, e.rdb)); err != nil {
		t.Fatalf("export changed data: %v", err)
	}

	// Not into a tenant the policy does not have: nothing could serve,
	// provision or offboard its data.
	stray := e.run(t, lifecycle.KindImport, "initrode", lifecycle.ImportParams{Archive: exp.ID}, store.OpFailed)
	if !strings.Contains(stray.Error, "not in the policy") {
		t.Errorf("import into a tenant not in the policy: %s", stray.Error)
	}
	if err := before.Equal(lifecycletest.Take(t, e.up, e.rdb)); err != nil {
		t.Fatalf("refused import changed data: %v", err)
	}

	// Import into a new id (in the policy, without data).
	imp := e.run(t, lifecycle.KindImport, "acme2", lifecycle.ImportParams{Archive: exp.ID}, store.OpSucceeded)
	after := lifecycletest.Take(t, e.up, e.rdb)
	if err := before.Equal(after.Without("acme2")); err != nil {
		t.Fatalf("import touched another tenant: %v", err)
	}
	if got := e.up.Counts(t, "acme2"); fmt.Sprint(got) != fmt.Sprint(acmeRows) {
		t.Errorf("acme2 has %v rows, acme %v", got, acmeRows)
	}
	if v, _ := e.rdb.Get(context.Background(), "t:acme2:str:3").Result(); v != "acme value 3" {
		t.Errorf("imported key: %q", v)
	}
	if ttl, _ := e.rdb.PTTL(context.Background(), "t:acme2:ttl:5").Result(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("imported key's ttl: %v", ttl)
	}
	if r := result(t, imp); string(r["verified"]) != "true" {
		t.Errorf("import result %v", r)
	}
	// A second import into acme2 is refused: it has data now.
	again := e.run(t, lifecycle.KindImport, "acme2", lifecycle.ImportParams{Archive: exp.ID}, store.OpFailed)
	if !strings.Contains(again.Error, "already has data") {
		t.Errorf("import into a tenant with data: %s", again.Error)
	}
	if err := after.Equal(lifecycletest.Take(t, e.up, e.rdb)); err != nil {
		t.Fatalf("refused import changed data: %v", err)
	}

	// Offboard acme, exporting first, in small batches.
	off := e.run(t, lifecycle.KindOffboard, "acme", lifecycle.OffboardParams{Export: true, BatchSize: 7}, store.OpSucceeded)
	final := lifecycletest.Take(t, e.up, e.rdb)
	if final["acme"] != "" {
		t.Errorf("acme's data is still there: %s", final["acme"])
	}
	if err := after.Without("acme").Equal(final); err != nil {
		t.Fatalf("offboarding acme changed another tenant: %v", err)
	}
	if got := tenantsOf(t, e.store); fmt.Sprint(got) != "[globex acme2 acme3 acme4]" {
		t.Errorf("tenants after offboarding: %v", got)
	}
	var deleted struct {
		Rows map[string]int64 `json:"rows"`
		Keys int64            `json:"keys"`
	}
	if err := json.Unmarshal(result(t, off)["deleted"], &deleted); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(deleted.Rows) != fmt.Sprint(acmeRows) || deleted.Keys != m.Redis.Keys {
		t.Errorf("deleted %+v, acme had %v rows and %d keys", deleted, acmeRows, m.Redis.Keys)
	}
	if _, ok := e.svc.ArchivePath(off.ID); !ok {
		t.Error("offboarding with export left no archive")
	}
	// The audit trail's end entry says what was deleted.
	page, err := e.store.Audit(context.Background(), store.AuditQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var end map[string]any
	for _, a := range page.Entries {
		var d map[string]any
		_ = json.Unmarshal(a.Detail, &d)
		if a.Action == store.ActionOperation && d["operation"] == off.ID && d["event"] == "end" {
			end = d
		}
	}
	if end == nil || !strings.Contains(fmt.Sprint(end["result"]), "public.invoices:") {
		t.Errorf("offboarding's end entry: %v", end)
	}
	if _, err := e.store.VerifyAudit(context.Background(), store.VerifyFull); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// TestImportCannotReachOtherTenants: an archive rewritten to carry
// globex's id in every row, keys named like globex's, and table files
// named to climb out of the directory, still loads only into the target
// tenant, or is refused whole.
func TestImportCannotReachOtherTenants(t *testing.T) {
	e := setup(t, nil)
	exp := e.run(t, lifecycle.KindExport, "acme", struct{}{}, store.OpSucceeded)
	path, _ := e.svc.ArchivePath(exp.ID)
	files := readTar(t, path)
	var m lifecycle.Manifest
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	upload := func(m lifecycle.Manifest, files map[string][]byte) (string, error) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		mb, _ := json.Marshal(m)
		add := func(name string, b []byte) {
			_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg})
			_, _ = tw.Write(b)
		}
		add("manifest.json", mb)
		for name, b := range files {
			if name != "manifest.json" {
				add(name, b)
			}
		}
		_ = tw.Close()
		return e.svc.SaveUpload(&buf, 1<<30)
	}
	clone := func(m lifecycle.Manifest, files map[string][]byte) (lifecycle.Manifest, map[string][]byte) {
		m.Tables = append([]lifecycle.ManifestTable(nil), m.Tables...)
		r := *m.Redis
		m.Redis = &r
		f := map[string][]byte{}
		for k, v := range files {
			f[k] = v
		}
		return m, f
	}
	before := lifecycletest.Take(t, e.up, e.rdb)

	// Every key is named like a globex key: it lands in acme3's namespace.
	km, kfiles := clone(m, files)
	var keys bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(kfiles[km.Redis.File]))
	for sc.Scan() {
		var rec map[string]any
		_ = json.Unmarshal(sc.Bytes(), &rec)
		raw, _ := json.Marshal(rec["key"])
		var key []byte
		_ = json.Unmarshal(raw, &key)
		rec["key"] = append([]byte("../t:globex:"), key...)
		b, _ := json.Marshal(rec)
		keys.Write(append(b, '\n'))
	}
	kfiles[km.Redis.File] = keys.Bytes()
	sum := sha256.Sum256(keys.Bytes())
	km.Redis.SHA256 = hex.EncodeToString(sum[:])
	name, err := upload(km, kfiles)
	if err != nil {
		t.Fatal(err)
	}
	first := name
	e.run(t, lifecycle.KindImport, "acme3", lifecycle.ImportParams{Archive: name}, store.OpSucceeded)
	after := lifecycletest.Take(t, e.up, e.rdb)
	if err := before.Equal(after.Without("acme3")); err != nil {
		t.Fatalf("the import reached another tenant: %v", err)
	}
	if got := e.up.Counts(t, "acme3"); fmt.Sprint(got) != fmt.Sprint(e.up.Counts(t, "acme")) {
		t.Errorf("acme3 has %v", got)
	}
	if n, _ := e.rdb.Exists(context.Background(), "t:acme3:../t:globex:str:1").Result(); n != 1 {
		t.Error("the key named like globex's is not in acme3's namespace")
	}

	// Every row claims globex: the rows are loaded as acme4's, which then
	// no longer match the archive, and the import is undone.
	rm, rfiles := clone(m, files)
	for i, mt := range rm.Tables {
		body := bytes.ReplaceAll(rfiles[mt.File], []byte(`"tenant_id": "acme"`), []byte(`"tenant_id": "globex"`))
		rfiles[mt.File] = body
		sum := sha256.Sum256(body)
		rm.Tables[i].SHA256 = hex.EncodeToString(sum[:])
	}
	if name, err = upload(rm, rfiles); err != nil {
		t.Fatal(err)
	}
	failed := e.run(t, lifecycle.KindImport, "acme4", lifecycle.ImportParams{Archive: name}, store.OpFailed)
	if !strings.Contains(failed.Error, "verify_import") {
		t.Errorf("error %q", failed.Error)
	}
	if err := after.Equal(lifecycletest.Take(t, e.up, e.rdb)); err != nil {
		t.Fatalf("the undone import left data, or reached another tenant: %v", err)
	}

	// A table file that climbs out, or a checksum that does not match,
	// refuses the archive before anything is loaded.
	bad := m
	bad.Tables = append([]lifecycle.ManifestTable(nil), m.Tables...)
	bad.Tables[0].File = "tables/../../etc/passwd.jsonl"
	if _, err := upload(bad, files); !errors.Is(err, lifecycle.ErrBadArchive) {
		t.Errorf("path in the manifest: %v", err)
	}
	bad.Tables[0] = m.Tables[0]
	bad.Tables[0].Rows++
	if _, err := upload(bad, files); !errors.Is(err, lifecycle.ErrBadArchive) {
		t.Errorf("wrong row count: %v", err)
	}
	entries, _ := os.ReadDir(e.archive)
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "upload-") && en.Name() != name && en.Name() != first {
			t.Errorf("a refused upload was kept: %s", filepath.Join(e.archive, en.Name()))
		}
	}
}

// TestProvision: a tenant with seed rows and keys enters the policy once
// they are in place and is ready when the data planes accept it; a seed
// row the database refuses, or a data plane that rejects the policy, rolls
// back everything the provision did.
func TestProvision(t *testing.T) {
	e := setup(t, nil)
	before := lifecycletest.Take(t, e.up, e.rdb)
	verifier := func(pw string) string {
		p := &policypb.Policy{Tenants: []*policypb.Tenant{{Id: "x", Credentials: []string{pw}}}}
		if err := policypb.HashCredentials(p); err != nil {
			t.Fatal(err)
		}
		return p.Tenants[0].Credentials[0]
	}
	params := func(id string, seedInvoice string) map[string]any {
		return map[string]any{
			"tenant": map[string]any{"id": id, "credentials": []string{verifier("initech-password")},
				"limits": map[string]any{"max_connections": 7}},
			"seed": map[string]any{
				"rows": map[string]any{
					"public.customers": []any{map[string]any{"id": 1, "name": "first", "tenant_id": "globex"}},
					"public.invoices":  []any{json.RawMessage(seedInvoice)},
				},
				"keys": map[string]string{"greeting": "hello initech"},
			},
		}
	}
	op := e.run(t, lifecycle.KindProvision, "initech", params("initech", `{"id": 1, "customer_id": 1, "total": 9.5}`), store.OpSucceeded)
	after := lifecycletest.Take(t, e.up, e.rdb)
	if err := before.Equal(after.Without("initech")); err != nil {
		t.Fatalf("provision touched another tenant: %v", err)
	}
	if got := e.up.Counts(t, "initech"); got["public.customers"] != 1 || got["public.invoices"] != 1 {
		t.Errorf("seeded rows %v", got)
	}
	if v, _ := e.rdb.Get(context.Background(), "t:initech:greeting").Result(); v != "hello initech" {
		t.Errorf("seeded key %q", v)
	}
	if got := tenantsOf(t, e.store); fmt.Sprint(got) != "[acme globex acme2 acme3 acme4 initech]" {
		t.Errorf("tenants %v", got)
	}
	if r := result(t, op); string(r["data_planes_ready"]) != "1" {
		t.Errorf("result %v", r)
	}

	// The invoice names a customer that does not exist: the customers
	// (committed first) are removed again, and the tenant never enters
	// the policy.
	failed := e.run(t, lifecycle.KindProvision, "hooli", params("hooli", `{"id": 1, "customer_id": 99, "total": 1}`), store.OpFailed)
	if !strings.Contains(failed.Error, "seed_rows") || !strings.Contains(failed.Error, "23503") {
		t.Errorf("error %q", failed.Error)
	}
	steps, _ := workflow.Steps(failed)
	if steps[1].Status != workflow.StepUndone || steps[3].Status != workflow.StepPending {
		t.Errorf("steps %+v", steps)
	}
	if err := after.Equal(lifecycletest.Take(t, e.up, e.rdb)); err != nil {
		t.Fatalf("a failed provision left data: %v", err)
	}

	// A data plane rejects the new policy: the tenant leaves the policy,
	// its seeded rows and keys are deleted.
	e.fleet.mu.Lock()
	e.fleet.nack = true
	e.fleet.mu.Unlock()
	nacked := e.run(t, lifecycle.KindProvision, "hooli", params("hooli", `{"id": 1, "customer_id": 1, "total": 1}`), store.OpFailed)
	if !strings.Contains(nacked.Error, "rejected policy version") {
		t.Errorf("error %q", nacked.Error)
	}
	if got := tenantsOf(t, e.store); fmt.Sprint(got) != "[acme globex acme2 acme3 acme4 initech]" {
		t.Errorf("tenants after the rollback %v", got)
	}
	if err := after.Equal(lifecycletest.Take(t, e.up, e.rdb)); err != nil {
		t.Fatalf("a rolled-back provision left data: %v", err)
	}
	if _, err := e.store.VerifyAudit(context.Background(), store.VerifyFull); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// TestRefusesRoleThatBypassesRLS: connected as a superuser (who bypasses
// row-level security), every operation that touches rows fails before
// reading or deleting anything.
func TestRefusesRoleThatBypassesRLS(t *testing.T) {
	e := setup(t, func(u *lifecycletest.Upstream) string { return u.AdminURL })
	before := lifecycletest.Take(t, e.up, e.rdb)
	exp := e.run(t, lifecycle.KindExport, "acme", struct{}{}, store.OpFailed)
	if !strings.Contains(exp.Error, "superuser") {
		t.Errorf("export as a superuser: %s", exp.Error)
	}
	if _, ok := e.svc.ArchivePath(exp.ID); ok {
		t.Error("an archive was written")
	}
	off := e.run(t, lifecycle.KindOffboard, "acme", lifecycle.OffboardParams{}, store.OpFailed)
	if !strings.Contains(off.Error, "superuser") {
		t.Errorf("offboard as a superuser: %s", off.Error)
	}
	if err := before.Equal(lifecycletest.Take(t, e.up, e.rdb)); err != nil {
		t.Fatalf("data changed: %v", err)
	}
	// The offboarding was undone: acme is active again.
	v, _ := e.store.Current(context.Background())
	for _, tn := range v.Policy.GetTenants() {
		if tn.GetSuspended() {
			t.Errorf("tenant %s left suspended", tn.GetId())
		}
	}
}
