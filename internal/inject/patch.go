package inject

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string
	Path  string
	Value any
}

// MarshalJSON writes value for add and replace even when it is null.
func (o patchOp) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{o.Op, o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// diffJSON returns the RFC 6902 patch that turns the JSON document a into
// b, or nil when they are equal.
//
// The patch touches only what differs, so fields of the original object
// that the typed k8s.io/api structs do not know (a newer API server's) are
// never rewritten. Arrays whose elements are all objects with a unique
// "name" (containers, volumes, env) are matched by name: elements are
// removed, added at their index, or patched in place, as long as the
// elements both arrays share keep their order; any other change to an
// array replaces it whole. A change inside an empty object is one add of
// its new value, so that the patch applies both to the API server's
// encoding of the object, which writes empty objects, and to a manifest,
// which leaves them out.
func diffJSON(a, b []byte) ([]byte, error) {
	va, err := decodeJSON(a)
	if err != nil {
		return nil, err
	}
	vb, err := decodeJSON(b)
	if err != nil {
		return nil, err
	}
	var ops []patchOp
	diffValue("", va, vb, &ops)
	if len(ops) == 0 {
		return nil, nil
	}
	return json.Marshal(ops)
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers compare and round-trip exactly
	var v any
	err := dec.Decode(&v)
	return v, err
}

func diffValue(path string, a, b any, ops *[]patchOp) {
	if reflect.DeepEqual(a, b) {
		return
	}
	switch a := a.(type) {
	case map[string]any:
		if b, ok := b.(map[string]any); ok {
			diffObject(path, a, b, ops)
			return
		}
	case []any:
		if b, ok := b.([]any); ok {
			diffArray(path, a, b, ops)
			return
		}
	}
	*ops = append(*ops, patchOp{Op: "replace", Path: path, Value: b})
}

func diffObject(path string, a, b map[string]any, ops *[]patchOp) {
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if _, ok := b[k]; !ok {
			*ops = append(*ops, patchOp{Op: "remove", Path: path + "/" + escape(k)})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b)) {
		av, ok := a[k]
		if ok && reflect.DeepEqual(av, b[k]) {
			continue
		}
		if m, isObj := av.(map[string]any); ok && !(isObj && len(m) == 0) {
			diffValue(path+"/"+escape(k), av, b[k], ops)
		} else {
			// An empty object may be one the typed encoding always writes
			// (a pod template's "metadata": {}) and a manifest leaves out:
			// add replaces it where it exists and creates it where not.
			*ops = append(*ops, patchOp{Op: "add", Path: path + "/" + escape(k), Value: b[k]})
		}
	}
}

func diffArray(path string, a, b []any, ops *[]patchOp) {
	na, okA := names(a)
	nb, okB := names(b)
	if !okA || !okB || !sameOrder(na, nb) {
		if len(a) == len(b) {
			for i := range a {
				diffValue(path+"/"+strconv.Itoa(i), a[i], b[i], ops)
			}
			return
		}
		*ops = append(*ops, patchOp{Op: "replace", Path: path, Value: b})
		return
	}
	inB := map[string]bool{}
	for _, n := range nb {
		inB[n] = true
	}
	// Remove from the end, so that earlier indexes stay valid.
	cur := slices.Clone(a)
	for i := len(a) - 1; i >= 0; i-- {
		if !inB[na[i]] {
			*ops = append(*ops, patchOp{Op: "remove", Path: path + "/" + strconv.Itoa(i)})
			cur = slices.Delete(cur, i, i+1)
		}
	}
	// What is left is b's shared elements, in b's order: walk b, adding
	// the new ones at their index and patching the shared ones in place.
	for j, bv := range b {
		if j < len(cur) && nameOf(cur[j]) == nb[j] {
			diffValue(path+"/"+strconv.Itoa(j), cur[j], bv, ops)
			continue
		}
		*ops = append(*ops, patchOp{Op: "add", Path: path + "/" + strconv.Itoa(j), Value: bv})
		cur = slices.Insert(cur, j, bv)
	}
}

// names returns the "name" of every element, if every element is an object
// with a unique string name.
func names(list []any) ([]string, bool) {
	out := make([]string, 0, len(list))
	seen := map[string]bool{}
	for _, v := range list {
		n := nameOf(v)
		if n == "" || seen[n] {
			return nil, false
		}
		seen[n] = true
		out = append(out, n)
	}
	return out, true
}

func nameOf(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	n, _ := m["name"].(string)
	return n
}

// sameOrder reports whether the names a and b share appear in the same
// relative order in both.
func sameOrder(a, b []string) bool {
	inA := map[string]bool{}
	for _, n := range a {
		inA[n] = true
	}
	inB := map[string]bool{}
	for _, n := range b {
		inB[n] = true
	}
	var sa, sb []string
	for _, n := range a {
		if inB[n] {
			sa = append(sa, n)
		}
	}
	for _, n := range b {
		if inA[n] {
			sb = append(sb, n)
		}
	}
	return slices.Equal(sa, sb)
}

// escape is RFC 6901's escaping of a reference token.
func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
