package policypb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tenantguard/tenantguard/policy"
)

// strict is how every policy text is decoded: an unknown field is an error,
// never silently dropped (a misspelt limit must not vanish).
var strict = protojson.UnmarshalOptions{DiscardUnknown: false}

// ParseJSON decodes a policy written as protojson: field names in
// snake_case or lowerCamelCase, durations as "30s" or as Go durations
// ("1m30s", "250ms"), enums by name (or number) or by short word
// ("one-slot", "immediate"; any case). Unknown fields are errors. For an
// unknown field or a value of the wrong type the error names the field's
// path (a *policy.FieldError in the chain); other errors are protojson's.
// ParseJSON does not validate: call Validate.
func ParseJSON(data []byte) (*Policy, error) {
	p := &Policy{}
	data = normalizeJSON(data, p.ProtoReflect().Descriptor())
	if err := strict.Unmarshal(data, p); err != nil {
		var v any
		if json.Unmarshal(data, &v) == nil {
			if ferr := checkShape(p.ProtoReflect().Descriptor(), v, ""); ferr != nil {
				return nil, fmt.Errorf("policy json: %w", ferr)
			}
		}
		return nil, fmt.Errorf("policy json: %w", err)
	}
	return p, nil
}

// ParseYAML decodes a policy written as YAML with the same field names and
// values as ParseJSON (Go durations and short enum words included): the
// YAML is turned into JSON and decoded with protojson, with the same rules
// and errors. The text holds one document
// (empty means an empty policy); anchors and merge keys work. ParseYAML does
// not validate: call Validate.
func ParseYAML(data []byte) (*Policy, error) {
	v, err := decodeYAML(data)
	if err != nil {
		return nil, fmt.Errorf("policy yaml: %w", err)
	}
	p := &Policy{}
	if v == nil { // an empty document, or only comments
		return p, nil
	}
	normalizeTree(p.ProtoReflect().Descriptor(), v)
	js, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("policy yaml: %w", err)
	}
	if err := strict.Unmarshal(js, p); err != nil {
		if ferr := checkShape(p.ProtoReflect().Descriptor(), v, ""); ferr != nil {
			return nil, fmt.Errorf("policy yaml: %w", ferr)
		}
		// Positions are in the intermediate JSON, not the YAML: drop them.
		return nil, fmt.Errorf("policy yaml: %s", jsonPosition.ReplaceAllString(err.Error(), ""))
	}
	return p, nil
}

var jsonPosition = regexp.MustCompile(`\(line \d+:\d+\): `)

// decodeYAML decodes exactly one YAML document into plain values that
// encoding/json can write: maps with string keys, slices, strings, numbers,
// booleans and nil.
func decodeYAML(data []byte) (v any, err error) {
	// go-yaml has panicked on hostile input before (CVE-2022-28948); a
	// policy file must never take the process down.
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("malformed YAML (parser failure: %v)", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, errors.New("more than one YAML document: a policy file holds one")
	}
	return plainValue(v, "")
}

// plainValue converts what go-yaml decodes into interface values into what
// encoding/json accepts; path names the value in errors. Keys are visited in
// sorted order so that the error for a given input is always the same.
func plainValue(v any, path string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			pe, err := plainValue(x[k], joinPath(path, k))
			if err != nil {
				return nil, err
			}
			x[k] = pe
		}
		return x, nil
	case map[any]any: // some key is not a string
		keys := slices.SortedFunc(maps.Keys(x), func(a, b any) int {
			return strings.Compare(fmt.Sprintf("%T %v", a, a), fmt.Sprintf("%T %v", b, b))
		})
		out := make(map[string]any, len(x))
		for _, k := range keys {
			s, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("%s: mapping key %v is not a string", orTop(path), k)
			}
			pe, err := plainValue(x[k], joinPath(path, s))
			if err != nil {
				return nil, err
			}
			out[s] = pe
		}
		return out, nil
	case []any:
		for i, e := range x {
			pe, err := plainValue(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			x[i] = pe
		}
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%s: %v is not a finite number", orTop(path), x)
		}
	}
	return v, nil
}

// checkShape walks a decoded JSON or YAML value along the message md and
// reports the first field (in sorted key order) that is unknown or whose
// value has the wrong JSON type, with its path. It runs only after protojson
// has refused the input, to name the field protojson's error may not; its
// checks accept a superset of what protojson accepts, so when it finds
// nothing, protojson's own error stands.
func checkShape(md protoreflect.MessageDescriptor, v any, path string) error {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		// protojson matches the JSON name first, then the proto name.
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByTextName(k)
		}
		if fd == nil {
			return &policy.FieldError{Field: joinPath(path, k), Msg: "unknown field"}
		}
		fpath := joinPath(path, string(fd.Name()))
		val := m[k]
		if val == nil {
			continue // null is "not set" for every field
		}
		if fd.IsList() {
			list, ok := val.([]any)
			if !ok {
				return &policy.FieldError{Field: fpath, Msg: "expected a list"}
			}
			for i, e := range list {
				if err := checkValue(fd, e, fmt.Sprintf("%s[%d]", fpath, i)); err != nil {
					return err
				}
			}
			continue
		}
		if err := checkValue(fd, val, fpath); err != nil {
			return err
		}
	}
	return nil
}

// maxDurationSeconds is google.protobuf.Duration's range, ±10,000 years.
const maxDurationSeconds = 315_576_000_000

// durationText is a loose form of protojson's Duration syntax (Go
// durations have been rewritten into it before checkShape runs).
var durationText = regexp.MustCompile(`^-?[0-9]*\.?[0-9]*s$`)

// checkValue checks one (non-list) value of field fd; see checkShape.
func checkValue(fd protoreflect.FieldDescriptor, v any, path string) error {
	fail := func(msg string) error { return &policy.FieldError{Field: path, Msg: msg} }
	switch fd.Kind() {
	case protoreflect.MessageKind:
		if fd.Message().FullName() == "google.protobuf.Duration" {
			s, ok := v.(string)
			if !ok {
				return fail(`expected a duration, e.g. "30s", "0.250s", "1m30s" or "250ms"`)
			}
			if !durationText.MatchString(s) {
				return fail(fmt.Sprintf(`%q is not a duration, e.g. "30s", "0.250s", "1m30s" or "250ms"`, s))
			}
			whole, _, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(s, "-"), "s"), ".")
			if n, err := strconv.ParseInt(whole, 10, 64); whole != "" && (err != nil || n > maxDurationSeconds) {
				return fail(fmt.Sprintf("%q is out of range (protobuf durations are at most 10,000 years)", s))
			}
			return nil
		}
		if _, ok := v.(map[string]any); !ok {
			return fail("expected a mapping of fields")
		}
		return checkShape(fd.Message(), v, path)
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			return fail("expected true or false")
		}
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			return fail("expected a string")
		}
	case protoreflect.Int32Kind:
		if f, ok := v.(float64); ok && (f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32) {
			return fail("expected a whole number that fits in 32 bits")
		}
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		if s, ok := v.(string); ok && values.ByName(protoreflect.Name(s)) == nil {
			if _, short := shortEnum(fd.Enum(), s); short {
				return nil
			}
			var names, words []string
			for i := range values.Len() {
				if values.Get(i).Number() != 0 {
					names = append(names, string(values.Get(i).Name()))
					words = append(words, shortWord(fd.Enum(), values.Get(i)))
				}
			}
			return fail(fmt.Sprintf("%q is not one of %s (or %s)", s, strings.Join(names, ", "), strings.Join(words, ", ")))
		}
	}
	return nil
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func orTop(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

// MarshalJSON writes p as protojson with proto (snake_case) field names,
// two-space indented and with a final newline. The output is stable: the
// same message gives the same bytes in every build (protojson's own
// whitespace is deliberately unstable, so it is re-indented here).
func MarshalJSON(p *Policy) ([]byte, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("policy json: %w", err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, js); err != nil {
		return nil, fmt.Errorf("policy json: %w", err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("policy json: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// MarshalYAML writes p as block-style YAML with the field names, order and
// values of MarshalJSON; ParseYAML reads it back to an equal message.
func MarshalYAML(p *Policy) ([]byte, error) {
	js, err := MarshalJSON(p)
	if err != nil {
		return nil, err
	}
	doc, err := jsonNode(json.NewDecoder(bytes.NewReader(js)))
	if err != nil {
		return nil, fmt.Errorf("policy yaml: %w", err)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("policy yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("policy yaml: %w", err)
	}
	return out.Bytes(), nil
}

// jsonNode reads one JSON value from dec as a YAML node tree in block
// style, keeping the field order. (Decoding the JSON text as YAML would keep
// the order too, but YAML refuses some characters, e.g. U+0080, that JSON
// carries raw; as a node's value the encoder escapes them.)
func jsonNode(dec *json.Decoder) (*yaml.Node, error) {
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch x := tok.(type) {
	case json.Delim: // '{' or '[': Token never returns a closing one here
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if x == '{' {
			n.Kind, n.Tag = yaml.MappingNode, "!!map"
		}
		for dec.More() {
			if n.Kind == yaml.MappingNode {
				key, err := dec.Token()
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key.(string)})
			}
			e, err := jsonNode(dec)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, e)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: x}, nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(x.String(), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: x.String()}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(x)}, nil
	default: // nil
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
}
