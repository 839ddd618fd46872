package policypb_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadDirMerges(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"10-acme.yaml":   "tenants:\n  - id: acme\n    credentials: [\"" + acmeVerifier1 + "\"]\n",
		"20-globex.json": `{"tenants": [{"id": "globex", "credentials": ["` + globexVerifier + `"]}], "tables": [{"name": "public.orders", "tenant_column": "tenant_id"}]}`,
		"30-redis.yml":   "redis: {namespace: NAMESPACE_MODE_SPREAD}\ntables: [{name: public.currencies, shared: true}]\n",
		"40-meta.yaml":   "version: v7\nsessions: {ttl: 60s}\n",
		"README.md":      "not a policy",
		".hidden.yaml":   "not: [valid",
		"sub/99.yaml":    "tenants: [{id: sub}]",
		"ignored.yaml~":  "tenants: [{id: backup}]",
	})
	if err := os.Mkdir(filepath.Join(dir, "dir.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := policypb.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids, tables []string
	for _, tn := range p.GetTenants() {
		ids = append(ids, tn.GetId())
	}
	for _, tb := range p.GetTables() {
		tables = append(tables, tb.GetName())
	}
	if strings.Join(ids, ",") != "acme,globex" || strings.Join(tables, ",") != "public.orders,public.currencies" {
		t.Fatalf("tenants %v, tables %v", ids, tables)
	}
	if p.GetVersion() != "v7" || p.GetRedis().GetNamespace() != policypb.NamespaceMode_NAMESPACE_MODE_SPREAD || p.GetSessions().GetTtl().GetSeconds() != 60 {
		t.Fatalf("sections: %v", p)
	}
	if err := policypb.Validate(p); err != nil {
		t.Fatal(err)
	}
}

func TestLoadDirRefuses(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{"redis twice", map[string]string{"a.yaml": "redis: {}", "b.json": `{"redis": {"allow_scripting": true}}`},
			[]string{"redis is set in both", "a.yaml", "b.json"}},
		{"sessions twice", map[string]string{"1.yml": "sessions: {grace: 1s}", "2.yml": "tenants: []", "3.yml": "sessions: {grace: 2s}"},
			[]string{"sessions is set in both", "1.yml", "3.yml"}},
		{"version twice", map[string]string{"a.json": `{"version": "1"}`, "b.json": `{"version": "2"}`},
			[]string{"version is set in both", "a.json", "b.json"}},
		{"unknown field names the file", map[string]string{"a.yaml": "version: x", "b.yaml": "tenants: [{id: a, limit: {}}]"},
			[]string{"b.yaml", "tenants[0].limit: unknown field"}},
		{"no policy files", map[string]string{"notes.txt": "x"}, []string{"no *.yaml, *.yml or *.json file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policypb.LoadDir(writeFiles(t, tc.files))
			if err == nil {
				t.Fatalf("LoadDir = %v, want an error", p)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := policypb.LoadDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("LoadDir of a missing directory passed")
	}
}
