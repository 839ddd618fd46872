package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apiyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// DocumentReport is what Manifests did with one workload.
type DocumentReport struct {
	// Object is "Kind namespace/name" (or "Kind name").
	Object string
	Outcome
	// Error is an injection error the object's failure policy ignored.
	Error string
}

// maxManifestBytes bounds one document of an offline manifest.
const maxManifestBytes = 16 << 20

// Manifests injects every workload of a multi-document YAML (or JSON)
// manifest, as the webhook would: each document's JSON patch (Patch) is
// applied with the JSON-patch library the API server uses, and the result
// is written as YAML. Documents of other kinds, and workloads left alone
// (opted out), are written back untouched. A List's items are injected
// one by one. An injection error stops it, unless the object's failure
// policy is ignore.
func (c *Config) Manifests(r io.Reader, w io.Writer) ([]DocumentReport, error) {
	reader := apiyaml.NewYAMLReader(bufio.NewReaderSize(r, 64<<10))
	var reports []DocumentReport
	first := true
	for n := 1; ; n++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return reports, nil
		}
		if err != nil {
			return reports, fmt.Errorf("document %d: %w", n, err)
		}
		if len(doc) > maxManifestBytes {
			return reports, fmt.Errorf("document %d: larger than %d bytes", n, maxManifestBytes)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return reports, fmt.Errorf("document %d: %w", n, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // an empty document or only comments
		}
		out, reps, err := c.document(js)
		reports = append(reports, reps...)
		if err != nil {
			return reports, fmt.Errorf("document %d: %w", n, err)
		}
		if out == nil {
			out = bytes.TrimRight(doc, "\n")
			out = append(out, '\n')
		}
		if !first {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return reports, err
			}
		}
		first = false
		if _, err := w.Write(out); err != nil {
			return reports, err
		}
	}
}

// typeMeta is what a document says it is.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func (t typeMeta) String() string {
	if t.Metadata.Namespace != "" {
		return t.Kind + " " + t.Metadata.Namespace + "/" + t.Metadata.Name
	}
	return t.Kind + " " + t.Metadata.Name
}

// document injects one document given as JSON; it returns the YAML to
// write, or nil to write the document as it was.
func (c *Config) document(js []byte) ([]byte, []DocumentReport, error) {
	var tm typeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, nil, nil // not an object: not ours to judge
	}
	if tm.APIVersion == "v1" && tm.Kind == "List" {
		return c.list(js)
	}
	patched, rep, err := c.object(js, tm)
	if err != nil || patched == nil {
		return nil, reportList(rep), err
	}
	out, err := yaml.JSONToYAML(patched)
	return out, reportList(rep), err
}

func reportList(r *DocumentReport) []DocumentReport {
	if r == nil {
		return nil
	}
	return []DocumentReport{*r}
}

// object injects one object; patched is nil when it is left as it was.
func (c *Config) object(js []byte, tm typeMeta) (patched []byte, rep *DocumentReport, err error) {
	if !Supported(tm.APIVersion, tm.Kind) {
		return nil, nil, nil
	}
	rep = &DocumentReport{Object: tm.String()}
	patch, out, err := c.Patch(tm.APIVersion, tm.Kind, js, ScopeNamespace)
	rep.Outcome = out
	var ie *Error
	switch {
	case errors.As(err, &ie) && ie.Policy == FailurePolicyIgnore:
		rep.Error = err.Error()
		return nil, rep, nil
	case err != nil:
		return nil, rep, fmt.Errorf("%s: %w", tm, err)
	case patch == nil:
		return nil, rep, nil
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, rep, fmt.Errorf("%s: %w", tm, err)
	}
	patched, err = p.Apply(js)
	if err != nil {
		return nil, rep, fmt.Errorf("%s: apply the injection: %w", tm, err)
	}
	return patched, rep, nil
}

// list injects each item of a v1 List (kubectl get -o yaml).
func (c *Config) list(js []byte) ([]byte, []DocumentReport, error) {
	var l map[string]json.RawMessage
	if err := json.Unmarshal(js, &l); err != nil {
		return nil, nil, fmt.Errorf("List: %w", err)
	}
	var items []json.RawMessage
	if raw, ok := l["items"]; ok {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, nil, fmt.Errorf("List items: %w", err)
		}
	}
	var reports []DocumentReport
	changed := false
	for i, item := range items {
		var tm typeMeta
		if err := json.Unmarshal(item, &tm); err != nil {
			continue
		}
		patched, rep, err := c.object(item, tm)
		if rep != nil {
			reports = append(reports, *rep)
		}
		if err != nil {
			return nil, reports, fmt.Errorf("List item %d: %w", i, err)
		}
		if patched != nil {
			items[i], changed = patched, true
		}
	}
	if !changed {
		return nil, reports, nil
	}
	b, err := json.Marshal(items)
	if err != nil {
		return nil, reports, err
	}
	l["items"] = b
	merged, err := json.Marshal(l)
	if err != nil {
		return nil, reports, err
	}
	out, err := yaml.JSONToYAML(merged)
	return out, reports, err
}
