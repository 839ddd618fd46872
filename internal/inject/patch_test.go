package inject

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	kjson "sigs.k8s.io/json"
)

// applyPatch applies p to doc with the library the API server uses.
func applyPatch(t testing.TB, doc, p []byte) []byte {
	t.Helper()
	if p == nil {
		return doc
	}
	dp, err := jsonpatch.DecodePatch(p)
	if err != nil {
		t.Fatalf("decode patch %s: %v", p, err)
	}
	out, err := dp.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch %s to %s: %v", p, doc, err)
	}
	return out
}

func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	va, err := decodeJSON(a)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := decodeJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(va, vb)
}

func TestDiffJSON(t *testing.T) {
	cases := []struct {
		name, a, b string
		ops        int // -1: don't care
	}{
		{"equal", `{"a":1}`, `{"a":1}`, 0},
		{"add key needing escape", `{"m":{"x/y":1}}`, `{"m":{"x/y":1,"a~b/c":2}}`, 1},
		{"remove key", `{"a":1,"b":2}`, `{"a":1}`, 1},
		{"replace scalar", `{"a":1}`, `{"a":"1"}`, 1},
		{"null value kept", `{"a":1}`, `{"a":null}`, 1},
		{"insert named first", `{"c":[{"name":"a"},{"name":"b"}]}`, `{"c":[{"name":"s"},{"name":"a"},{"name":"b"}]}`, 1},
		{"remove named middle", `{"c":[{"name":"a"},{"name":"s"},{"name":"b"}]}`, `{"c":[{"name":"a"},{"name":"b"}]}`, 1},
		{"move named: patched in place", `{"c":[{"name":"a"},{"name":"s"}]}`, `{"c":[{"name":"s"},{"name":"a"}]}`, 2},
		{"remove one, add another, patch one", `{"c":[{"name":"s","v":1},{"name":"a","v":1}]}`, `{"c":[{"name":"a","v":2},{"name":"t"}]}`, 3},
		{"unnamed same length", `{"c":[1,2,3]}`, `{"c":[1,5,3]}`, 1},
		{"unnamed other length", `{"c":[1,2]}`, `{"c":[1,2,3]}`, 1},
		{"empty object replaced by add", `{"m":{}}`, `{"m":{"a":{"b":1}}}`, 1},
		{"type change", `{"a":{"b":1}}`, `{"a":[1]}`, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := diffJSON([]byte(tc.a), []byte(tc.b))
			if err != nil {
				t.Fatal(err)
			}
			var ops []map[string]any
			if p != nil {
				if err := json.Unmarshal(p, &ops); err != nil {
					t.Fatal(err)
				}
			}
			if tc.ops >= 0 && len(ops) != tc.ops {
				t.Errorf("%d ops, want %d: %s", len(ops), tc.ops, p)
			}
			if got := applyPatch(t, []byte(tc.a), p); !jsonEqual(t, got, []byte(tc.b)) {
				t.Fatalf("patch %s turns %s into %s, want %s", p, tc.a, got, tc.b)
			}
		})
	}
}

// TestDiffKeepsUnknownFields: fields the typed structs do not know, in the
// object the API server sends, survive the patch.
func TestDiffKeepsUnknownFields(t *testing.T) {
	c := DefaultConfig("1.0.0")
	raw := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","futureMeta":1},
		"spec":{"futureSpec":{"x":1},"containers":[{"name":"app","image":"a:1","futureContainerField":true,
		"env":[{"name":"DATABASE_URL","value":"postgres://acme:pw@db:5432/app"}]}]}}`)
	p, out, err := c.Patch("v1", "Pod", raw, ScopeNamespace)
	if err != nil || !out.Injected {
		t.Fatalf("%+v %v", out, err)
	}
	got := applyPatch(t, raw, p)
	for _, want := range []string{`"futureMeta":1`, `"futureSpec":{"x":1}`, `"futureContainerField":true`, `127.0.0.1:6432`} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("patched pod lacks %s: %s", want, got)
		}
	}
}

func FuzzDiffJSON(f *testing.F) {
	f.Add(`{"a":[{"name":"x"},{"name":"y"}],"b":{}}`, `{"a":[{"name":"y","v":1},{"name":"z"}],"b":{"c":1}}`)
	f.Add(`[1,2,{"name":"a"}]`, `[{"name":"a"}]`)
	f.Add(`{"~/":1}`, `{"/~":2}`)
	f.Fuzz(func(t *testing.T, a, b string) {
		// Patch roots are always objects (Kubernetes objects).
		var oa, ob map[string]any
		if json.Unmarshal([]byte(a), &oa) != nil || json.Unmarshal([]byte(b), &ob) != nil || oa == nil || ob == nil {
			return
		}
		p, err := diffJSON([]byte(a), []byte(b))
		if err != nil {
			return // not one JSON value each (trailing data)
		}
		if got := applyPatch(t, []byte(a), p); !jsonEqual(t, got, []byte(b)) {
			t.Fatalf("patch %s turns %s into %s, want %s", p, a, got, b)
		}
	})
}

// FuzzPatch: any object sent as a Pod gives a patch that applies and
// yields a pod with exactly one sidecar, or an error; never a panic.
func FuzzPatch(f *testing.F) {
	c := DefaultConfig("1.0.0")
	f.Add([]byte(`{"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","env":[{"name":"DATABASE_URL","value":"postgres://u:p@h:1/d?sslmode=require"}]}]}}`))
	f.Add([]byte(`{"metadata":{"annotations":{"tenantguard.io/tenant-source":"label:t"},"labels":{"t":"acme"}},"spec":{"initContainers":[{"name":"tenantguard-sidecar"}],"containers":[{"name":"tenantguard-sidecar"},{"name":"a"}]}}`))
	f.Add([]byte(`{"spec":{"containers":[]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, out, err := c.Patch("v1", "Pod", raw, ScopeNamespace)
		if err != nil || p == nil {
			return
		}
		got := applyPatch(t, raw, p)
		var pod struct {
			Spec struct {
				InitContainers []struct {
					Name string `json:"name"`
				} `json:"initContainers"`
				Containers []struct {
					Name string `json:"name"`
				} `json:"containers"`
			} `json:"spec"`
		}
		// Case-sensitive, as the API server reads it ("nAme" is not a name).
		if err := kjson.UnmarshalCaseSensitivePreserveInts(got, &pod); err != nil {
			t.Fatalf("patched pod does not decode: %v", err)
		}
		n := 0
		for _, ctr := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
			if ctr.Name == SidecarName {
				n++
			}
		}
		if n != 1 || !out.Injected {
			t.Fatalf("%d sidecars after injection: %s", n, got)
		}
	})
}
