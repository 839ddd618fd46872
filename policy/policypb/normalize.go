package policypb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Hand-written policies may spell durations the Go way ("1h", "1m30s",
// "250ms") and enum values by the sidecar configuration's short words
// ("spread", "one-slot", "immediate", "boundary", in any case). protojson
// accepts neither, so ParseYAML and ParseJSON rewrite such values into
// protojson's form ("3600s", "NAMESPACE_MODE_ONE_SLOT") before decoding;
// MarshalJSON keeps writing the canonical form.

// durationName is the full name of google.protobuf.Duration.
const durationName protoreflect.FullName = "google.protobuf.Duration"

// goDuration returns s, a Go duration (time.ParseDuration syntax), as a
// protojson duration ("5400s", "0.250s"); ok is false when s is not a Go
// duration. A value protojson reads already reads the same either way, so
// rewriting it changes nothing; protojson durations beyond Go's ±292 years
// are left to protojson.
func goDuration(s string) (string, bool) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return "", false
	}
	sign := ""
	abs := uint64(d) // two's complement: correct for math.MinInt64 too
	if d < 0 {
		sign, abs = "-", -abs
	}
	secs, nanos := abs/uint64(time.Second), abs%uint64(time.Second)
	if nanos == 0 {
		return fmt.Sprintf("%s%ds", sign, secs), true
	}
	frac := strings.TrimRight(fmt.Sprintf("%09d", nanos), "0")
	return fmt.Sprintf("%s%d.%ss", sign, secs, frac), true
}

// shortEnum returns the full name of the value of ed whose short word is s
// (case-insensitively); ok is false when s is no value's short word. A
// value's short word is its name without the enum's prefix, lower case,
// with '-' for '_': NAMESPACE_MODE_ONE_SLOT is "one-slot". The zero
// (UNSPECIFIED) value has none.
func shortEnum(ed protoreflect.EnumDescriptor, s string) (string, bool) {
	values := ed.Values()
	for i := range values.Len() {
		v := values.Get(i)
		if v.Number() != 0 && strings.EqualFold(s, shortWord(ed, v)) {
			return string(v.Name()), true
		}
	}
	return "", false
}

// shortWord is v's short word (see shortEnum).
func shortWord(ed protoreflect.EnumDescriptor, v protoreflect.EnumValueDescriptor) string {
	word := strings.TrimPrefix(string(v.Name()), enumPrefix(ed))
	return strings.ReplaceAll(strings.ToLower(word), "_", "-")
}

// enumPrefix is the prefix protobuf style gives every value of ed: its
// name in upper snake case and "_" (NamespaceMode: "NAMESPACE_MODE_").
func enumPrefix(ed protoreflect.EnumDescriptor) string {
	var b strings.Builder
	for i, r := range string(ed.Name()) {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String()) + "_"
}

// fieldByKey finds the field a JSON key names, as protojson does: by JSON
// name first, then by proto name.
func fieldByKey(md protoreflect.MessageDescriptor, key string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(key); fd != nil {
		return fd
	}
	return md.Fields().ByTextName(key)
}

// normalScalar returns the protojson form of a string value s of field fd
// when s is a Go duration or a short enum word; ok is false when s is
// left as it is.
func normalScalar(fd protoreflect.FieldDescriptor, s string) (string, bool) {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		if fd.Message().FullName() == durationName {
			return goDuration(s)
		}
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByName(protoreflect.Name(s)) == nil {
			return shortEnum(fd.Enum(), s)
		}
	}
	return "", false
}

// normalizeTree rewrites, in place, the Go durations and short enum words
// of v, a decoded YAML document (plainValue's maps, slices and scalars), at
// the fields of md. Values of the wrong shape are left for protojson and
// checkShape to refuse.
func normalizeTree(md protoreflect.MessageDescriptor, v any) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, val := range m {
		fd := fieldByKey(md, k)
		if fd == nil || fd.IsMap() {
			continue
		}
		if fd.IsList() {
			if list, ok := val.([]any); ok {
				for i, e := range list {
					list[i] = normalizeTreeValue(fd, e)
				}
			}
			continue
		}
		m[k] = normalizeTreeValue(fd, val)
	}
}

func normalizeTreeValue(fd protoreflect.FieldDescriptor, v any) any {
	if s, ok := v.(string); ok {
		if n, ok := normalScalar(fd, s); ok {
			return n
		}
		return v
	}
	if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() != durationName {
		normalizeTree(fd.Message(), v)
	}
	return v
}

// normalizeJSON returns data with the Go durations and short enum words at
// md's fields rewritten into protojson's form. Every other byte is kept, so
// protojson's errors keep their lines and it still sees duplicate fields,
// numbers exactly as written and invalid UTF-8. Input that is not exactly
// one well-formed JSON value is returned unchanged for protojson to refuse.
func normalizeJSON(data []byte, md protoreflect.MessageDescriptor) []byte {
	n := &jsonNormalizer{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	n.dec.UseNumber()
	if err := n.message(md); err != nil {
		return data
	}
	if _, err := n.dec.Token(); !errors.Is(err, io.EOF) {
		return data
	}
	if len(n.edits) == 0 {
		return data
	}
	out := make([]byte, 0, len(data)+16*len(n.edits))
	last := 0
	for _, e := range n.edits {
		out = append(out, data[last:e.start]...)
		out = append(out, e.text...)
		last = e.end
	}
	return append(out, data[last:]...)
}

// jsonNormalizer walks a JSON text token by token along a message
// descriptor and records the string literals to replace.
type jsonNormalizer struct {
	data  []byte
	dec   *json.Decoder
	edits []jsonEdit // in increasing offset order
}

// jsonEdit replaces data[start:end] (a string literal) with text.
type jsonEdit struct {
	start, end int
	text       string
}

// errNotJSON stops a walk over input that is not what it can rewrite.
var errNotJSON = errors.New("not a JSON value")

// next returns the next token and the offset where it ends.
func (n *jsonNormalizer) next() (json.Token, int, error) {
	tok, err := n.dec.Token()
	if err != nil {
		return nil, 0, err
	}
	return tok, int(n.dec.InputOffset()), nil
}

// message walks one value that should be an object of message md.
func (n *jsonNormalizer) message(md protoreflect.MessageDescriptor) error {
	tok, _, err := n.next()
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return n.skipRest(tok)
	}
	for n.dec.More() {
		key, _, err := n.next()
		if err != nil {
			return err
		}
		name, ok := key.(string)
		if !ok {
			return errNotJSON
		}
		fd := fieldByKey(md, name)
		switch {
		case fd == nil || fd.IsMap():
			err = n.skip()
		case fd.IsList():
			err = n.list(fd)
		default:
			err = n.value(fd)
		}
		if err != nil {
			return err
		}
	}
	_, _, err = n.next() // '}'
	return err
}

// list walks one value that should be a list of fd's values.
func (n *jsonNormalizer) list(fd protoreflect.FieldDescriptor) error {
	tok, _, err := n.next()
	if err != nil {
		return err
	}
	if tok != json.Delim('[') {
		return n.skipRest(tok)
	}
	for n.dec.More() {
		if err := n.value(fd); err != nil {
			return err
		}
	}
	_, _, err = n.next() // ']'
	return err
}

// value walks one (non-list) value of field fd, recording a rewrite when
// it is a string normalScalar changes.
func (n *jsonNormalizer) value(fd protoreflect.FieldDescriptor) error {
	if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() != durationName {
		return n.message(fd.Message())
	}
	start := int(n.dec.InputOffset())
	tok, end, err := n.next()
	if err != nil {
		return err
	}
	s, ok := tok.(string)
	if !ok {
		return n.skipRest(tok)
	}
	norm, ok := normalScalar(fd, s)
	if !ok {
		return nil
	}
	// Between the previous token and this one lie only white space and a
	// ':' or ','; the literal starts at the first quote.
	quote := bytes.IndexByte(n.data[start:end], '"')
	if quote < 0 {
		return errNotJSON
	}
	n.edits = append(n.edits, jsonEdit{start: start + quote, end: end, text: strconv.Quote(norm)})
	return nil
}

// skip skips one value.
func (n *jsonNormalizer) skip() error {
	tok, _, err := n.next()
	if err != nil {
		return err
	}
	return n.skipRest(tok)
}

// skipRest skips the rest of a value whose first token was tok; iterative,
// so depth is bounded only by the decoder's own limit.
func (n *jsonNormalizer) skipRest(tok json.Token) error {
	depth := 0
	for {
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth <= 0 {
			return nil
		}
		var err error
		if tok, _, err = n.next(); err != nil {
			return err
		}
	}
}
