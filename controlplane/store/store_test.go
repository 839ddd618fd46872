package store_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// sameBody compares two policies but for their version fields.
func sameBody(a, b *policypb.Policy) bool {
	a, b = proto.Clone(a).(*policypb.Policy), proto.Clone(b).(*policypb.Policy)
	a.Version, b.Version = "", ""
	return proto.Equal(a, b)
}

func TestPutGetList(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	ctx := ctxT(t, 30*time.Second)

	if _, err := s.Current(ctx); !errors.Is(err, store.ErrEmpty) || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Current on an empty store: %v, want ErrEmpty", err)
	}
	bodies := []*policypb.Policy{
		testPolicy(t, "acme"),
		testPolicy(t, "acme", "globex"),
		testPolicy(t, "globex"),
	}
	bodies[0].Version = "999" // ignored: the store numbers versions
	for i, p := range bodies {
		v, err := s.Put(ctx, "alice", "change "+string(rune('a'+i)), p)
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		if v.Version != int64(i+1) || v.Parent != int64(i) || v.Policy.GetVersion() != string(rune('1'+i)) {
			t.Fatalf("put %d: version %d parent %d policy.version %q", i, v.Version, v.Parent, v.Policy.GetVersion())
		}
	}
	if bodies[0].Version != "999" {
		t.Error("Put changed the caller's policy")
	}

	for _, tc := range []struct {
		name     string
		version  int64
		body     *policypb.Policy
		parent   int64
		comment  string
		diffHas  []string
		diffLack []string
	}{
		{"first against empty", 1, bodies[0], 0, "change a",
			[]string{"--- empty\n+++ version 1\n", "+      \"id\": \"acme\",\n"}, []string{"\"version\""}},
		{"tenant added", 2, bodies[1], 1, "change b",
			[]string{"--- version 1\n+++ version 2\n", "+      \"id\": \"globex\",\n"}, []string{"-      \"id\": \"acme\"", "\"version\""}},
		{"tenant removed", 3, bodies[2], 2, "change c",
			[]string{"-      \"id\": \"acme\",\n"}, []string{"+      \"id\": \"globex\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := s.Get(ctx, tc.version)
			if err != nil {
				t.Fatal(err)
			}
			if !sameBody(v.Policy, tc.body) {
				t.Errorf("body %v, want %v", v.Policy, tc.body)
			}
			if v.Policy.GetVersion() != strconv.FormatInt(tc.version, 10) {
				t.Errorf("policy.version %q", v.Policy.GetVersion())
			}
			if v.Parent != tc.parent || v.Author != "alice" || v.Comment != tc.comment || v.CreatedAt.IsZero() {
				t.Errorf("info %+v", v.VersionInfo)
			}
			for _, s := range tc.diffHas {
				if !strings.Contains(v.Diff, s) {
					t.Errorf("diff lacks %q:\n%s", s, v.Diff)
				}
			}
			for _, s := range tc.diffLack {
				if strings.Contains(v.Diff, s) {
					t.Errorf("diff has %q:\n%s", s, v.Diff)
				}
			}
		})
	}

	cur, err := s.Current(ctx)
	if err != nil || cur.Version != 3 || !sameBody(cur.Policy, bodies[2]) {
		t.Fatalf("current: %d %v", cur.Version, err)
	}
	if _, err := s.Get(ctx, 4); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get 4: %v, want ErrNotFound", err)
	}

	for _, tc := range []struct {
		name   string
		limit  int
		before int64
		want   []int64
	}{
		{"all, newest first", 0, 0, []int64{3, 2, 1}},
		{"limit", 2, 0, []int64{3, 2}},
		{"before", 10, 3, []int64{2, 1}},
		{"page 2", 1, 2, []int64{1}},
		{"past the start", 5, 1, nil},
	} {
		t.Run("list "+tc.name, func(t *testing.T) {
			got, err := s.List(ctx, tc.limit, tc.before)
			if err != nil {
				t.Fatal(err)
			}
			var nums []int64
			for _, vi := range got {
				nums = append(nums, vi.Version)
				if vi.Author != "alice" || vi.Comment == "" {
					t.Errorf("info %+v", vi)
				}
			}
			if !equalInts(nums, tc.want) {
				t.Errorf("versions %v, want %v", nums, tc.want)
			}
		})
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRollback(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	a, b := testPolicy(t, "acme"), testPolicy(t, "acme", "globex")
	for _, p := range []*policypb.Policy{a, b} {
		if _, err := s.Put(ctx, "alice", "", p); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.Rollback(ctx, "bob", 1)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != 3 || v.Parent != 2 || v.Author != "bob" || v.Comment != "rollback to version 1" || !sameBody(v.Policy, a) {
		t.Fatalf("rollback: %+v %v", v.VersionInfo, v.Policy)
	}
	if !strings.Contains(v.Diff, "-      \"id\": \"globex\",\n") {
		t.Errorf("rollback diff does not remove globex:\n%s", v.Diff)
	}
	got, err := s.Get(ctx, 3)
	if err != nil || !sameBody(got.Policy, a) || got.Policy.GetVersion() != "3" {
		t.Fatalf("get 3: %v %v", got.Policy, err)
	}
	// Version 1 itself is unchanged.
	if v1, err := s.Get(ctx, 1); err != nil || v1.Policy.GetVersion() != "1" {
		t.Fatalf("get 1: %v %v", v1.Policy, err)
	}
	for _, to := range []int64{0, 4, 42, -1} {
		if _, err := s.Rollback(ctx, "bob", to); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("rollback to %d: %v, want ErrNotFound", to, err)
		}
	}
	if cur, _ := s.Current(ctx); cur.Version != 3 {
		t.Errorf("a failed rollback wrote version %d", cur.Version)
	}
}

func TestInvalidPolicyRefused(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	if _, err := s.Put(ctx, "alice", "", testPolicy(t, "acme")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		edit   func(p *policypb.Policy)
		field  string
		hashed bool // Seed hashes plaintext credentials, so the policy is valid to it
	}{
		{"plaintext credential", func(p *policypb.Policy) { p.Tenants[0].Credentials = []string{"password-1"} }, "tenants[0].credentials[0]", true},
		{"short plaintext credential", func(p *policypb.Policy) { p.Tenants[0].Credentials = []string{"pw"} }, "tenants[0].credentials[0]", false},
		{"duplicate tenant", func(p *policypb.Policy) { p.Tenants = append(p.Tenants, p.Tenants[0]) }, "tenants[1].id", false},
		{"bad tenant id", func(p *policypb.Policy) { p.Tenants[0].Id = "Acme!" }, "tenants[0].id", false},
		{"no credential", func(p *policypb.Policy) { p.Tenants[0].Credentials = nil }, "tenants[0].credentials", false},
		{"bad emulate", func(p *policypb.Policy) { p.Redis = &policypb.RedisRules{Emulate: []string{"keys"}} }, "redis.emulate[0]", false},
		{"negative limit", func(p *policypb.Policy) { p.Tenants[0].Limits = &policypb.Limits{MaxConnections: -1} }, "tenants[0].limits.max_connections", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy(t, "acme")
			tc.edit(p)
			for name, put := range map[string]func() error{
				"Put":   func() error { _, err := s.Put(ctx, "alice", "", p); return err },
				"PutIf": func() error { _, err := s.PutIf(ctx, "alice", "", p, 1); return err },
				"Seed":  func() error { _, _, err := s.Seed(ctx, "alice", p); return err },
			} {
				if name == "Seed" && tc.hashed {
					continue
				}
				err := put()
				var fe *policy.FieldError
				if !errors.Is(err, store.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
					t.Errorf("%s: %v, want an invalid-policy error naming %s", name, err, tc.field)
				}
			}
		})
	}
	if _, err := s.Put(ctx, "alice", "", nil); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("nil policy: %v", err)
	}
	for _, tc := range []struct{ name, author, comment string }{
		{"empty author", "", ""},
		{"author with newline", "a\nb", ""},
		{"comment with NUL", "alice", "a\x00b"},
		{"comment not UTF-8", "alice", "\xff"},
		{"author too long", strings.Repeat("a", 300), ""},
	} {
		if _, err := s.Put(ctx, tc.author, tc.comment, testPolicy(t, "acme")); !errors.Is(err, store.ErrBadText) {
			t.Errorf("%s: %v, want ErrBadText", tc.name, err)
		}
	}
	if cur, _ := s.Current(ctx); cur.Version != 1 {
		t.Fatalf("refused puts wrote version %d", cur.Version)
	}
}

func TestPutIfConflict(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	p := testPolicy(t, "acme")
	if v, err := s.PutIf(ctx, "alice", "", p, 0); err != nil || v.Version != 1 {
		t.Fatalf("PutIf(0) on an empty store: %d %v", v.Version, err)
	}
	for _, tc := range []struct {
		name   string
		expect int64
	}{{"empty expected", 0}, {"future", 5}, {"negative", -1}} {
		_, err := s.PutIf(ctx, "alice", "", p, tc.expect)
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", tc.name, err)
		}
	}
	var ce *store.ConflictError
	if _, err := s.PutIf(ctx, "alice", "", p, 0); !errors.As(err, &ce) || ce.Current != 1 || ce.Expected != 0 {
		t.Errorf("conflict error %v", err)
	}

	// Of writers racing from the same parent exactly one wins.
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() { _, errs[i] = s.PutIf(ctx, "w", "", testPolicy(t, "acme", "globex"), 1) })
	}
	wg.Wait()
	var won int
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("racing PutIf: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d racing PutIf calls won, want 1", won)
	}
	if cur, _ := s.Current(ctx); cur.Version != 2 {
		t.Fatalf("current %d, want 2", cur.Version)
	}
}

func TestSeedOnce(t *testing.T) {
	db := newDatabase(t)
	// Two control planes starting at once on an empty database: both
	// migrate, both seed, one wins.
	stores := make([]*store.Store, 2)
	var wg sync.WaitGroup
	openErrs := make([]error, 2)
	for i := range stores {
		wg.Go(func() {
			var err error
			stores[i], err = store.Open(context.Background(), db.url, testLogger())
			openErrs[i] = err
		})
	}
	wg.Wait()
	for i, err := range openErrs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		t.Cleanup(stores[i].Close)
	}
	ctx := ctxT(t, 30*time.Second)
	seed := &policypb.Policy{Tenants: []*policypb.Tenant{{Id: "acme", Credentials: []string{"plaintext-password"}}}}
	type result struct {
		v      store.Version
		seeded bool
		err    error
	}
	results := make([]result, 2)
	for i, s := range stores {
		wg.Go(func() {
			v, seeded, err := s.Seed(ctx, "seed", seed)
			results[i] = result{v, seeded, err}
		})
	}
	wg.Wait()
	var seeded int
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("seed %d: %v", i, r.err)
		}
		if r.v.Version != 1 {
			t.Errorf("seed %d returned version %d", i, r.v.Version)
		}
		if r.seeded {
			seeded++
		}
	}
	if seeded != 1 {
		t.Fatalf("%d seeds won, want 1", seeded)
	}
	if seed.Tenants[0].Credentials[0] != "plaintext-password" {
		t.Error("Seed changed the caller's policy")
	}
	cur, err := stores[0].Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := cur.Policy.GetTenants()[0].GetCredentials()[0]; !strings.HasPrefix(c, "SCRAM-SHA-256$") {
		t.Errorf("seeded credential was not hashed")
	}
	// Once anything is stored, Seed does nothing.
	if _, err := stores[0].Put(ctx, "alice", "", testPolicy(t, "globex")); err != nil {
		t.Fatal(err)
	}
	v, ok, err := stores[1].Seed(ctx, "seed", seed)
	if err != nil || ok || v.Version != 2 {
		t.Fatalf("seed after put: version %d, seeded %v, %v", v.Version, ok, err)
	}
	page, err := stores[0].Audit(ctx, store.AuditQuery{})
	entries := page.Entries
	if err != nil || len(entries) != 2 || entries[0].Action != store.ActionSeed || entries[1].Action != store.ActionPut {
		t.Fatalf("audit: %v %v", entries, err)
	}
}

func TestSuspendResume(t *testing.T) {
	db := newDatabase(t)
	s := openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	if _, err := s.SetSuspended(ctx, "ops", "acme", true); !errors.Is(err, store.ErrEmpty) {
		t.Fatalf("suspend on an empty store: %v", err)
	}
	if _, err := s.Put(ctx, "alice", "", testPolicy(t, "acme", "globex")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		tenant    string
		suspended bool
		version   int64
		err       error
	}{
		{"suspend", "acme", true, 2, nil},
		{"suspend again changes nothing", "acme", true, 2, store.ErrUnchanged},
		{"resume other, already active", "globex", false, 2, store.ErrUnchanged},
		{"unknown tenant", "initech", true, 0, store.ErrNotFound},
		{"resume", "acme", false, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := s.SetSuspended(ctx, "ops", tc.tenant, tc.suspended)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if tc.version != 0 && v.Version != tc.version {
				t.Fatalf("version %d, want %d", v.Version, tc.version)
			}
			if tc.err == nil {
				for _, tn := range v.Policy.GetTenants() {
					want := tn.GetId() == tc.tenant && tc.suspended
					if tn.GetSuspended() != want {
						t.Errorf("tenant %s suspended=%v", tn.GetId(), tn.GetSuspended())
					}
				}
			}
		})
	}
	page, err := s.Audit(ctx, store.AuditQuery{After: 1})
	if err != nil {
		t.Fatal(err)
	}
	entries := page.Entries
	if len(entries) != 2 {
		t.Fatalf("%d audit entries after seq 1, want 2", len(entries))
	}
	for i, want := range []string{store.ActionSuspend, store.ActionResume} {
		e := entries[i]
		if e.Action != want || e.Actor != "ops" || e.Version != int64(i+2) || !strings.Contains(string(e.Detail), `"tenant":"acme"`) {
			t.Errorf("entry %d: %s %s v%d %s", e.Seq, e.Action, e.Actor, e.Version, e.Detail)
		}
	}
	v2, _ := s.Get(ctx, 2)
	if v2.Comment != "suspend tenant acme" || !strings.Contains(v2.Diff, "+      \"suspended\": true\n") {
		t.Errorf("version 2: %q\n%s", v2.Comment, v2.Diff)
	}
}

func TestConcurrentWritersKeepOneChain(t *testing.T) {
	db := newDatabase(t)
	a, b := openStore(t, db), openStore(t, db)
	ctx := ctxT(t, 30*time.Second)
	if _, err := a.Put(ctx, "alice", "", testPolicy(t, "acme", "globex")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, s := range []*store.Store{a, b, a, b} {
		wg.Go(func() {
			for j := range 5 {
				var err error
				switch (i + j) % 3 {
				case 0:
					_, err = s.Put(ctx, "w", "", testPolicy(t, "acme", "globex"))
				case 1:
					_, err = s.SetSuspended(ctx, "w", "acme", j%2 == 0)
				case 2:
					_, err = s.Rollback(ctx, "w", 1)
				}
				if err != nil && !errors.Is(err, store.ErrUnchanged) {
					t.Errorf("writer %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	rep, err := b.VerifyAudit(ctx, store.VerifyFull)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := a.Current(ctx)
	if int64(rep.Checked) != cur.Version || rep.VerifiedSeq != cur.Version {
		t.Fatalf("verified %d entries up to seq %d, current version %d", rep.Checked, rep.VerifiedSeq, cur.Version)
	}
}
